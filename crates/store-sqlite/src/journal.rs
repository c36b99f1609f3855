//! The HL7 journal: a durable log in front of `hl7_messages`.
//!
//! An MLLP sender waits for each message's ACK, and the ACK may only leave once the
//! message is on disk (DESIGN §3). A SQLite commit of one row here writes a dozen WAL
//! frames (the table and its indexes), each a system call, then flushes the WAL; the
//! journal instead writes the received messages as one block of a file that was
//! zero-filled when it was made, with `O_DIRECT | O_DSYNC` where the filesystem allows
//! (the write bypasses the page cache and is on the disk when it returns; elsewhere a
//! write, then `fdatasync`). Each append starts on a fresh 4 KiB block, so it never
//! rewrites a block holding messages already acknowledged. A task then moves them into
//! `hl7_messages` in large transactions, in the order they were appended, and only afterwards
//! lets the journal reuse their space.
//!
//! Layout: a 4 KiB header holding two 512-byte slots (written alternately, each with a
//! sequence number and a CRC, so a torn write of one leaves the other), then a ring of
//! `capacity` bytes. A position in the ring is a log sequence number (LSN): a byte count
//! that only grows; its offset is `LSN mod capacity`. Every record is 8-byte aligned and
//! starts with a 24-byte header (magic, kind, payload length, its own LSN, CRC-32 of all
//! of it), so a record left from an earlier lap of the ring (wrong LSN), a torn record
//! (wrong CRC) or zeros (wrong magic) all end the log. A record never wraps: the tail of
//! the ring is covered by a padding record, or skipped when too short to hold one.
//!
//! The header's checkpoint is the LSN before which every message is in the table
//! (durably). Opening the journal moves every valid record from the checkpoint on into
//! the table (a message already there, by id, is not stored twice), so a crash at any
//! moment loses nothing that was acknowledged and stores nothing twice.
//!
//! Duplicates (the same sender, control id and bytes) are found before the reply: among
//! messages still in the journal (a map kept in memory until they are in the table),
//! then in the table (an indexed look-up on a connection of the journal's own).
//!
//! The file is made on the first append, at [`INITIAL_CAPACITY`]; when a batch does not
//! fit, or appends had to wait for space, it is remade twice as large the next time
//! everything in it has been moved. The file is locked (`flock`) by the process using
//! it, so a second process on the same database records its messages directly instead.

use crate::{SqliteStore, micros};
use domain::{Hl7MessageId, InterfaceId, OrgId};
use jiff::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use store::{Hl7Message, Hl7State, Hl7Store, Recorded, StoreError, StoreResult};
use uuid::Uuid;

/// The header: two slots, then the ring.
const HEADER_LEN: u64 = 4096;
const SLOT_LEN: u64 = 512;
const SLOT_MAGIC: &[u8; 8] = b"RPHL7JNL";
const VERSION: u32 = 1;
/// magic(8) version(4) capacity(8) checkpoint(8) seq(8) crc(4)
const SLOT_BYTES: usize = 40;

const RECORD_MAGIC: u32 = 0x524C_3748;
/// magic(4) kind(1) reserved(3) len(4) crc(4) lsn(8)
const RECORD_HEADER: u64 = 24;
const KIND_ROW: u8 = 1;
const KIND_PAD: u8 = 2;

/// Every append starts at a multiple of this (padding the one before it): appends then
/// never rewrite a block holding messages already acknowledged, and can bypass the page
/// cache (`O_DIRECT`), whose reads and writes must be aligned to blocks.
const BLOCK: u64 = 4096;

/// The size a new journal's ring starts at.
pub const INITIAL_CAPACITY: u64 = 1 << 20;
/// The most the ring grows to; a batch must fit in half of it.
const MAX_CAPACITY: u64 = 1 << 30;
/// Most messages moved into the table in one transaction, and most bytes.
const MOVE_ROWS: usize = 512;
const MOVE_BYTES: usize = 8 << 20;
/// How long an append waits for the mover to free space before it gives up.
#[cfg(not(test))]
const SPACE_WAIT: Duration = Duration::from_secs(10);
#[cfg(test)]
const SPACE_WAIT: Duration = Duration::from_millis(300);
/// How long the mover lets messages gather after a batch that was not full: a commit
/// costs about as much for one message as for hundreds.
const MOVE_GATHER: Duration = Duration::from_millis(10);
/// How long moved messages may wait before the database's log is flushed and their space
/// in the journal freed (sooner when the space is wanted).
const SYNC_EVERY: Duration = Duration::from_millis(100);
/// How long the mover waits after the table refused a batch.
const MOVE_RETRY: Duration = Duration::from_secs(1);

/// The duplicate key: organisation, sender, control id, hash of the bytes.
type Key = (Uuid, String, String, String);

fn key(m: &Hl7Message) -> Key {
    (
        m.org_id.0,
        m.sender.clone(),
        m.control_id.clone(),
        m.content_hash.clone(),
    )
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("HL7 journal {}: {what}: {e}", path.display()))
}

/// The journal's bookkeeping, behind one lock that is never held across I/O.
struct Ring {
    /// The file, shared with whoever writes to it; `None` until the first append makes it.
    file: Option<Arc<File>>,
    /// The same file opened for appends that bypass the page cache and are on the disk
    /// when written (`O_DIRECT | O_DSYNC`, where the platform and filesystem allow).
    direct: Option<Arc<File>>,
    capacity: u64,
    /// Where the next record goes.
    write_lsn: u64,
    /// Everything before it is in the table (committed, visible to readers).
    committed_lsn: u64,
    /// Everything before it is in the table durably.
    moved_lsn: u64,
    /// What the header on disk says, flushed: the space before it may be written over.
    checkpoint: u64,
    /// The sequence number of the header slot written last.
    header_seq: u64,
    /// Messages on disk and not yet in the table, oldest first, each with the LSN just
    /// after its record.
    queue: VecDeque<(u64, Hl7Message)>,
    /// Their duplicate keys, with their id and reply.
    index: HashMap<Key, (Hl7MessageId, String)>,
    /// Appends waiting for space.
    space_waiters: usize,
    /// Appends had to wait for space: make the ring larger when it is next empty.
    grow: bool,
    /// Set when a write or flush failed: what reached the disk is then unknown, so nothing
    /// more is appended (messages are refused until a restart) and the mover only empties
    /// the queue.
    failed: Option<String>,
}

pub(crate) struct Journal {
    path: PathBuf,
    /// The database's write-ahead log, flushed to make the mover's commits durable.
    wal: PathBuf,
    ring: Mutex<Ring>,
    /// Held by an append for all of it, so appends go one at a time; with the journal's
    /// own connection to the database, for duplicate look-ups.
    appending: Mutex<rusqlite::Connection>,
    /// Signalled when space is freed.
    space: Condvar,
    /// Wakes the mover.
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    stopped: tokio::sync::Notify,
    mover_done: AtomicBool,
    moved: Arc<dyn Fn() + Send + Sync>,
    /// The lock on `<journal>.lock`, held for the journal's life: one process at a time.
    _lock: File,
}

/// A header slot as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    capacity: u64,
    checkpoint: u64,
    seq: u64,
}

fn encode_slot(slot: &Slot) -> [u8; SLOT_BYTES] {
    let mut b = [0u8; SLOT_BYTES];
    b[0..8].copy_from_slice(SLOT_MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..20].copy_from_slice(&slot.capacity.to_le_bytes());
    b[20..28].copy_from_slice(&slot.checkpoint.to_le_bytes());
    b[28..36].copy_from_slice(&slot.seq.to_le_bytes());
    let crc = crc32fast::hash(&b[0..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(b: &[u8]) -> Option<Slot> {
    if b.len() < SLOT_BYTES || &b[0..8] != SLOT_MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    if u32_at(8) != VERSION || u32_at(36) != crc32fast::hash(&b[0..36]) {
        return None;
    }
    let slot = Slot {
        capacity: u64_at(12),
        checkpoint: u64_at(20),
        seq: u64_at(28),
    };
    (slot.capacity >= 4096 && slot.capacity.is_multiple_of(8) && slot.capacity <= MAX_CAPACITY)
        .then_some(slot)
}

/// One record's bytes: header and payload, padded to 8.
fn encode_record(kind: u8, lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, below
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let total = align8(RECORD_HEADER + payload.len() as u64) as usize;
    out.resize(start + total, 0);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 12]);
    crc.update(&out[start + 16..start + total]);
    let crc = crc.finalize();
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
}

/// A padding record of `total` bytes (at least a header's worth) at `lsn`.
fn encode_pad(lsn: u64, total: u64, out: &mut Vec<u8>) {
    let payload = vec![0u8; (total - RECORD_HEADER) as usize];
    encode_record(KIND_PAD, lsn, &payload, out);
}

/// The message as stored in a record.
fn encode_message(m: &Hl7Message, out: &mut Vec<u8>) {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out.extend_from_slice(m.id.0.as_bytes());
    out.extend_from_slice(m.org_id.0.as_bytes());
    match m.interface_id {
        Some(i) => {
            out.push(1);
            out.extend_from_slice(i.0.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&micros(m.received_at).to_le_bytes());
    bytes(out, m.sender.as_bytes());
    bytes(out, m.control_id.as_bytes());
    bytes(out, m.content_hash.as_bytes());
    bytes(out, m.message_type.as_bytes());
    bytes(out, &m.raw);
    bytes(out, m.ack.as_bytes());
    bytes(out, m.ack_code.as_bytes());
    bytes(out, m.state.as_str().as_bytes());
    match &m.result {
        Some(r) => {
            out.push(1);
            bytes(out, r.to_string().as_bytes());
        }
        None => out.push(0),
    }
    match m.processed_at {
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&micros(t).to_le_bytes());
        }
        None => out.push(0),
    }
}

/// Reads a message back; `None` when the bytes are not one (the CRC matched, so this
/// means another version wrote it).
fn decode_message(b: &[u8]) -> Option<Hl7Message> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u8(&mut self) -> Option<u8> {
            self.take(1).map(|b| b[0])
        }
        fn uuid(&mut self) -> Option<Uuid> {
            Uuid::from_slice(self.take(16)?).ok()
        }
        fn i64(&mut self) -> Option<i64> {
            Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
            self.take(n)
        }
        fn string(&mut self) -> Option<String> {
            String::from_utf8(self.bytes()?.to_vec()).ok()
        }
        fn instant(&mut self) -> Option<Timestamp> {
            Timestamp::from_microsecond(self.i64()?).ok()
        }
    }
    let mut r = Reader(b);
    let id = Hl7MessageId(r.uuid()?);
    let org_id = OrgId(r.uuid()?);
    let interface_id = match r.u8()? {
        0 => None,
        _ => Some(InterfaceId(r.uuid()?)),
    };
    let received_at = r.instant()?;
    let sender = r.string()?;
    let control_id = r.string()?;
    let content_hash = r.string()?;
    let message_type = r.string()?;
    let raw = r.bytes()?.to_vec();
    let ack = r.string()?;
    let ack_code = r.string()?;
    let state = Hl7State::parse(&r.string()?)?;
    let result = match r.u8()? {
        0 => None,
        _ => Some(serde_json::from_slice(r.bytes()?).ok()?),
    };
    let processed_at = match r.u8()? {
        0 => None,
        _ => Some(r.instant()?),
    };
    Some(Hl7Message {
        id,
        org_id,
        interface_id,
        received_at,
        sender,
        control_id,
        content_hash,
        message_type,
        raw,
        ack,
        ack_code,
        state,
        result,
        processed_at,
    })
}

#[cfg(unix)]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_at(file: &File, offset: u64, buf: &[u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_at(file: &File, mut offset: u64, mut buf: &[u8]) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = file.seek_write(buf, offset)?;
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// A file only this process reads and writes (the journal holds message text, as the
/// database does).
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Why a journal cannot be read, for the person who must decide what to do with it.
fn unreadable(path: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "the HL7 journal {} cannot be read ({what}): it was made by another version of Rapport, or damaged. The messages in it may not be in the log yet; run the version that made it, or move the file aside to go on without them",
        path.display()
    ))
}

/// The valid slot with the highest sequence number; an error when neither is valid.
fn read_header(file: &File, path: &Path) -> StoreResult<Slot> {
    let mut buf = vec![0u8; (2 * SLOT_LEN) as usize];
    match read_at(file, 0, &mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(unreadable(path, "shorter than its header"));
        }
        r => r.map_err(|e| io("read", path, e))?,
    }
    let a = decode_slot(&buf[..SLOT_LEN as usize]);
    let b = decode_slot(&buf[SLOT_LEN as usize..]);
    match (a, b) {
        (Some(a), Some(b)) => Ok(if a.seq >= b.seq { a } else { b }),
        (Some(s), None) | (None, Some(s)) => Ok(s),
        (None, None) => Err(unreadable(path, "no valid header")),
    }
}

/// The messages in the ring from `checkpoint` on, in order. A record a crash left
/// unfinished, zeros, or one left from an earlier lap of the ring end the log; a whole
/// record that cannot be read is an error.
fn scan(file: &File, path: &Path, capacity: u64, checkpoint: u64) -> StoreResult<Vec<Hl7Message>> {
    let mut lsn = checkpoint;
    let mut messages = Vec::new();
    let mut head = [0u8; RECORD_HEADER as usize];
    let mut walked = 0u64;
    while walked < capacity {
        let room = capacity - lsn % capacity;
        if room < RECORD_HEADER {
            lsn += room;
            walked += room;
            continue;
        }
        match read_at(file, HEADER_LEN + lsn % capacity, &mut head) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            r => r.map_err(|e| io("read", path, e))?,
        }
        let magic = u32::from_le_bytes(head[0..4].try_into().unwrap_or_default());
        let kind = head[4];
        let len = u64::from(u32::from_le_bytes(
            head[8..12].try_into().unwrap_or_default(),
        ));
        let crc = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        let at = u64::from_le_bytes(head[16..24].try_into().unwrap_or_default());
        let total = align8(RECORD_HEADER + len);
        if magic != RECORD_MAGIC || at != lsn || total > room {
            break;
        }
        let mut rest = vec![0u8; (total - RECORD_HEADER) as usize];
        match read_at(file, HEADER_LEN + lsn % capacity + RECORD_HEADER, &mut rest) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            r => r.map_err(|e| io("read", path, e))?,
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[0..12]);
        hasher.update(&head[16..24]);
        hasher.update(&rest);
        if hasher.finalize() != crc {
            break;
        }
        match kind {
            KIND_ROW => match decode_message(&rest[..len as usize]) {
                Some(m) => messages.push(m),
                None => return Err(unreadable(path, "a message it holds")),
            },
            KIND_PAD => {}
            _ => return Err(unreadable(path, "a record of an unknown kind")),
        }
        lsn += total;
        walked += total;
    }
    Ok(messages)
}

/// `<path>` with `suffix` added to its name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a zero-filled journal of `capacity` at `path` (through a temporary file and a
/// rename, so that a crash leaves the old one or the new one), its header saying
/// `checkpoint`.
fn make_file(path: &Path, capacity: u64, checkpoint: u64, seq: u64) -> StoreResult<File> {
    let tmp = with_suffix(path, ".new");
    let file = private(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
    )
    .open(&tmp)
    .map_err(|e| io("create", &tmp, e))?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < HEADER_LEN + capacity {
        let n = (HEADER_LEN + capacity - at).min(zeros.len() as u64) as usize;
        write_at(&file, at, &zeros[..n]).map_err(|e| io("zero-fill", &tmp, e))?;
        at += n as u64;
    }
    let slot = encode_slot(&Slot {
        capacity,
        checkpoint,
        seq,
    });
    write_at(&file, (seq % 2) * SLOT_LEN, &slot).map_err(|e| io("write", &tmp, e))?;
    file.sync_all().map_err(|e| io("flush", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", path, e))?;
    sync_dir(path);
    Ok(file)
}

/// Makes a rename or a new file durable (best effort: not every platform can).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

impl Journal {
    /// Opens the journal beside the database at `db_path`: moves what an earlier process
    /// left in it into the table, then starts the task that moves new messages. Fails
    /// when another process holds the journal, or when what it holds cannot be read or
    /// moved (then nothing should be recorded past it: the order would be lost).
    pub(crate) async fn open(
        store: &SqliteStore,
        db_path: &Path,
        moved: Arc<dyn Fn() + Send + Sync>,
    ) -> StoreResult<Arc<Journal>> {
        let journal = Self::recover(store, db_path, moved).await?;
        tokio::spawn(mover(journal.clone(), store.clone()));
        Ok(journal)
    }

    /// [`Journal::open`] without the task that moves messages.
    async fn recover(
        store: &SqliteStore,
        db_path: &Path,
        moved: Arc<dyn Fn() + Send + Sync>,
    ) -> StoreResult<Arc<Journal>> {
        let path = with_suffix(db_path, "-hl7journal");
        let lock_path = with_suffix(&path, ".lock");
        let lock = private(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .open(&lock_path)
        .map_err(|e| io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable(format!(
                    "another process holds the HL7 journal {}",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path, e)),
        }
        // A file being made when the last process stopped holds nothing yet.
        let _ = std::fs::remove_file(with_suffix(&path, ".new"));
        match File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("open", &path, e)),
            Ok(file) => {
                let slot = read_header(&file, &path)?;
                let left = scan(&file, &path, slot.capacity, slot.checkpoint)?;
                // Durably (not a derived write): the file goes next.
                for chunk in left.chunks(MOVE_ROWS) {
                    store.record_hl7_messages(chunk).await?;
                }
                if !left.is_empty() {
                    tracing::info!(
                        messages = left.len(),
                        "HL7 messages left in the journal by the previous run moved into the log"
                    );
                    moved();
                }
                // Everything in it is in the table: the first append makes a new one, so
                // nothing left in this one (a record after a torn one, say) is ever read
                // again.
                drop(file);
                std::fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
                sync_dir(&path);
            }
        }
        let lookup = rusqlite::Connection::open(db_path).map_err(|e| {
            StoreError::Unavailable(format!("HL7 journal: opening the database: {e}"))
        })?;
        lookup
            .execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
            .map_err(|e| StoreError::Unavailable(format!("HL7 journal: {e}")))?;
        let ring = Ring {
            file: None,
            direct: None,
            capacity: INITIAL_CAPACITY,
            write_lsn: 0,
            committed_lsn: 0,
            moved_lsn: 0,
            checkpoint: 0,
            header_seq: 0,
            queue: VecDeque::new(),
            index: HashMap::new(),
            space_waiters: 0,
            grow: false,
            failed: None,
        };
        Ok(Arc::new(Journal {
            wal: with_suffix(db_path, "-wal"),
            path,
            ring: Mutex::new(ring),
            appending: Mutex::new(lookup),
            space: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            stopped: tokio::sync::Notify::new(),
            mover_done: AtomicBool::new(false),
            moved,
            _lock: lock,
        }))
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`store::Hl7Journal::append`].
    pub(crate) fn append(&self, messages: &[Hl7Message]) -> StoreResult<Vec<Recorded>> {
        let lookup = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        let duplicate = |(original, ack): &(Hl7MessageId, String)| Recorded::Duplicate {
            original: *original,
            ack: ack.clone(),
        };
        // Duplicates of messages still in the journal…
        let mut found: Vec<Option<Recorded>> = {
            let ring = self.ring();
            if let Some(why) = &ring.failed {
                return Err(StoreError::Unavailable(format!(
                    "HL7 journal unusable since a write failed: {why}"
                )));
            }
            if self.stopping.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("HL7 journal closed".into()));
            }
            messages
                .iter()
                .map(|m| ring.index.get(&key(m)).map(duplicate))
                .collect()
        };
        // …then of messages in the table (a message leaves the journal's map only once
        // it is committed there, so each is found in one place or the other)…
        for (m, f) in messages.iter().zip(found.iter_mut()) {
            if f.is_none() {
                *f = stored_original(&lookup, m)?.as_ref().map(duplicate);
            }
        }
        // …and of one earlier in this batch.
        let mut fresh: Vec<&Hl7Message> = Vec::with_capacity(messages.len());
        {
            let mut ring = self.ring();
            for (m, f) in messages.iter().zip(found.iter_mut()) {
                if f.is_some() {
                    continue;
                }
                let k = key(m);
                if let Some(first) = ring.index.get(&k) {
                    *f = Some(duplicate(first));
                    continue;
                }
                ring.index.insert(k, (m.id, m.ack.clone()));
                fresh.push(m);
            }
        }
        if !fresh.is_empty() {
            let payloads: Vec<Vec<u8>> = fresh
                .iter()
                .map(|m| {
                    let mut p = Vec::with_capacity(m.raw.len() + m.ack.len() + 256);
                    encode_message(m, &mut p);
                    p
                })
                .collect();
            let written = self.write(&payloads);
            let mut ring = self.ring();
            match written {
                Ok((ends, end)) => {
                    ring.write_lsn = end;
                    for (m, end) in fresh.iter().zip(ends) {
                        ring.queue.push_back((end, (*m).clone()));
                    }
                }
                Err(e) => {
                    for m in &fresh {
                        ring.index.remove(&key(m));
                    }
                    return Err(e);
                }
            }
            drop(ring);
            self.wake.notify_one();
        }
        drop(lookup);
        Ok(found
            .into_iter()
            .map(|r| r.unwrap_or(Recorded::Stored))
            .collect())
    }

    /// Writes the records at the end of the ring and flushes (the caller holds
    /// `appending`); returns the LSN after each and after the last. Waits for space, and
    /// makes or grows the file, as needed.
    fn write(&self, payloads: &[Vec<u8>]) -> StoreResult<(Vec<u64>, u64)> {
        let totals: Vec<u64> = payloads
            .iter()
            .map(|p| align8(RECORD_HEADER + p.len() as u64))
            .collect();
        // At most one wrap, whose padding is shorter than the record after it.
        let worst = totals.iter().sum::<u64>() + totals.iter().max().copied().unwrap_or(0);
        if worst > MAX_CAPACITY / 2 {
            return Err(StoreError::Unavailable(format!(
                "HL7 journal: a batch of {worst} bytes is larger than the journal allows"
            )));
        }
        let deadline = Instant::now() + SPACE_WAIT;
        let ((file, direct), capacity, start) = loop {
            let mut ring = self.ring();
            if let Some(why) = &ring.failed {
                return Err(StoreError::Unavailable(format!(
                    "HL7 journal unusable since a write failed: {why}"
                )));
            }
            // Making the file anew discards what it holds: only once all of it is
            // durably in the table.
            let empty = ring.queue.is_empty() && ring.moved_lsn == ring.write_lsn;
            if ring.file.is_none()
                || (empty
                    && ring.capacity < MAX_CAPACITY
                    && (worst * 2 > ring.capacity || ring.grow))
            {
                let mut capacity = ring.capacity;
                if ring.file.is_some() {
                    capacity *= 2;
                }
                while worst * 2 > capacity {
                    capacity *= 2;
                }
                let capacity = capacity.min(MAX_CAPACITY);
                // The ring starts at its first byte.
                let lsn = ring.write_lsn.div_ceil(capacity) * capacity;
                let seq = ring.header_seq + 1;
                let grown = ring.file.is_some();
                drop(ring);
                let file = make_file(&self.path, capacity, lsn, seq)?;
                if grown {
                    tracing::info!(
                        bytes = capacity,
                        "HL7 journal made larger: messages arrived faster than they reached the log"
                    );
                }
                let direct = open_direct(&self.path);
                let mut ring = self.ring();
                ring.file = Some(Arc::new(file));
                ring.direct = direct.map(Arc::new);
                ring.capacity = capacity;
                ring.write_lsn = lsn;
                ring.committed_lsn = lsn;
                ring.moved_lsn = lsn;
                ring.checkpoint = lsn;
                ring.header_seq = seq;
                ring.grow = false;
                continue;
            }
            let end = layout_end(ring.write_lsn, ring.capacity, &totals);
            if end - ring.checkpoint <= ring.capacity
                && let Some(file) = ring.file.clone()
            {
                break ((file, ring.direct.clone()), ring.capacity, ring.write_lsn);
            }
            // Full: wait for the mover, and grow the ring when it is next empty.
            ring.grow = true;
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(
                    "HL7 journal full: messages are not reaching the log".into(),
                ));
            }
            ring.space_waiters += 1;
            self.wake.notify_one();
            let mut ring = self
                .space
                .wait_timeout(ring, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            ring.space_waiters -= 1;
        };
        let mut lsn = start;
        let mut block = Vec::with_capacity(worst as usize);
        let mut ends = Vec::with_capacity(payloads.len());
        // Parts: (offset in the file, bytes); at most one wrap.
        let mut parts: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut part_start = HEADER_LEN + lsn % capacity;
        for (p, total) in payloads.iter().zip(&totals) {
            let room = capacity - lsn % capacity;
            if room < *total {
                pad(lsn, room, &mut block);
                lsn += room;
                parts.push((part_start, std::mem::take(&mut block)));
                part_start = HEADER_LEN;
            }
            encode_record(KIND_ROW, lsn, p, &mut block);
            lsn += total;
            ends.push(lsn);
        }
        let end = block_end(lsn, capacity);
        pad(lsn, end - lsn, &mut block);
        lsn = end;
        parts.push((part_start, block));
        let mut parts = parts.iter().filter(|(_, bytes)| !bytes.is_empty());
        let outcome = match &direct {
            // On the disk once written.
            Some(direct) => parts
                .try_for_each(|(offset, bytes)| write_at(direct, *offset, aligned(bytes).get())),
            None => parts
                .try_for_each(|(offset, bytes)| write_at(&file, *offset, bytes))
                .and_then(|()| file.sync_data()),
        };
        if let Err(e) = outcome {
            // What reached the disk is now unknown; stop appending (see `failed`).
            let why = e.to_string();
            tracing::error!(path = %self.path.display(), error = %why, "HL7 journal write failed; HL7 messages are refused until Rapport is restarted");
            self.ring().failed = Some(why);
            return Err(io("write", &self.path, e));
        }
        Ok((ends, lsn))
    }

    /// The next messages to move (copies; they stay in the queue until they are in the
    /// table).
    fn next_batch(&self) -> Vec<Hl7Message> {
        let ring = self.ring();
        let mut bytes = 0;
        let mut batch = Vec::new();
        for (_, m) in ring.queue.iter() {
            if batch.len() >= MOVE_ROWS || (bytes >= MOVE_BYTES && !batch.is_empty()) {
                break;
            }
            bytes += m.raw.len();
            batch.push(m.clone());
        }
        batch
    }

    /// The first `n` queued messages are in the table (committed, maybe not yet durably):
    /// forget them, so duplicates are now found there, and tell the applier. Their space
    /// is freed by [`Journal::make_durable`].
    fn committed_first(&self, n: usize) {
        let mut ring = self.ring();
        for _ in 0..n {
            if let Some((end, m)) = ring.queue.pop_front() {
                ring.index.remove(&key(&m));
                ring.committed_lsn = end;
            }
        }
        if ring.queue.is_empty() {
            ring.committed_lsn = ring.write_lsn;
        }
        drop(ring);
        (self.moved)();
    }

    /// Whether committed messages should be made durable now: their space is wanted (an
    /// append waits, the ring is half full, the journal closes) or `since` (the time since
    /// the last time) reached [`SYNC_EVERY`].
    fn wants_durable(&self, since: Duration) -> bool {
        let ring = self.ring();
        ring.committed_lsn > ring.checkpoint
            && (since >= SYNC_EVERY
                || ring.space_waiters > 0
                || ring.grow
                || (ring.write_lsn - ring.checkpoint) * 2 > ring.capacity
                || self.stopping.load(Ordering::SeqCst))
    }

    /// Makes what the mover committed durable, then writes and flushes the header saying
    /// so, and only then lets appends write over that space.
    ///
    /// The mover commits without waiting for the disk (a derived write, see
    /// `store::durability`): SQLite has written those transactions to its write-ahead
    /// log, in order, and here that file is flushed. Every committed transaction is then
    /// on disk: in the log, or copied into the database by a checkpoint, before which
    /// SQLite flushes the log and after which it flushes the database.
    async fn make_durable(&self) -> StoreResult<()> {
        let target = self.ring().committed_lsn;
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || File::open(&wal).and_then(|f| f.sync_data()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("HL7 journal: {e}")))?
            .map_err(|e| io("flushing the database log", &self.wal, e))?;
        let header = {
            let mut ring = self.ring();
            ring.moved_lsn = ring.moved_lsn.max(target);
            match ring.file.clone() {
                Some(file) if ring.failed.is_none() && ring.moved_lsn > ring.checkpoint => {
                    ring.header_seq += 1;
                    let slot = Slot {
                        capacity: ring.capacity,
                        checkpoint: ring.moved_lsn,
                        seq: ring.header_seq,
                    };
                    Some((file, slot))
                }
                _ => None,
            }
        };
        if let Some((file, slot)) = header {
            let written = file.clone();
            tokio::task::spawn_blocking(move || {
                write_at(&written, (slot.seq % 2) * SLOT_LEN, &encode_slot(&slot))?;
                written.sync_data()
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("HL7 journal: {e}")))?
            .map_err(|e| io("write", &self.path, e))?;
            let mut ring = self.ring();
            // Unless the file was made anew meanwhile (its own header is then newer).
            if ring.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &file)) {
                ring.checkpoint = ring.checkpoint.max(slot.checkpoint);
            }
        }
        self.space.notify_all();
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.ring().queue.is_empty()
    }

    /// Moves the oldest messages into the table (one transaction); how many.
    async fn move_once(&self, store: &SqliteStore) -> StoreResult<usize> {
        let batch = self.next_batch();
        if batch.is_empty() {
            return Ok(0);
        }
        // Without waiting for the disk: the journal keeps the messages until
        // `make_durable` has flushed the database's log.
        let results = store::durability::derived(store.record_hl7_messages(&batch)).await?;
        for (m, r) in batch.iter().zip(&results) {
            if let Recorded::Duplicate { original, .. } = r {
                tracing::warn!(message_id = %m.id, original = %original, "an HL7 message from the journal was in the log already under another id");
            }
        }
        self.committed_first(batch.len());
        Ok(batch.len())
    }

    /// See [`store::Hl7Journal::close`].
    pub(crate) async fn close(&self, timeout: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let waited = tokio::time::timeout(timeout, async {
            while !self.mover_done.load(Ordering::SeqCst) {
                let stopped = self.stopped.notified();
                if self.mover_done.load(Ordering::SeqCst) {
                    break;
                }
                stopped.await;
            }
        })
        .await;
        let ring = self.ring();
        waited.is_ok() && ring.queue.is_empty() && ring.checkpoint >= ring.committed_lsn
    }
}

/// Where the LSN is after records of `totals` bytes are laid out from `lsn`, and the
/// padding to the next block.
fn layout_end(mut lsn: u64, capacity: u64, totals: &[u64]) -> u64 {
    for total in totals {
        let room = capacity - lsn % capacity;
        if room < *total {
            lsn += room;
        }
        lsn += total;
    }
    block_end(lsn, capacity)
}

/// Where padding from `lsn` (8-aligned) to a block boundary ends: the next boundary, or
/// the one after when the gap is too short for a padding record (unless the ring ends
/// there: a gap shorter than a record header at the end of the ring is skipped anyway).
fn block_end(lsn: u64, capacity: u64) -> u64 {
    let gap = (BLOCK - lsn % BLOCK) % BLOCK;
    let room = capacity - lsn % capacity;
    if gap == 0 || gap >= RECORD_HEADER || room == gap {
        lsn + gap
    } else {
        lsn + gap + BLOCK
    }
}

/// `len` bytes of padding at `lsn`: a padding record, or zeros when too short for one.
fn pad(lsn: u64, len: u64, out: &mut Vec<u8>) {
    if len >= RECORD_HEADER {
        encode_pad(lsn, len, out);
    } else {
        out.resize(out.len() + len as usize, 0);
    }
}

/// Bytes in memory aligned to [`BLOCK`], as `O_DIRECT` needs.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn get(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

fn aligned(bytes: &[u8]) -> Aligned {
    let block = BLOCK as usize;
    let mut buf = vec![0u8; bytes.len() + block];
    let start = (block - buf.as_ptr() as usize % block) % block;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    Aligned {
        buf,
        start,
        len: bytes.len(),
    }
}

/// The journal opened for appends that bypass the page cache and are on the disk when
/// written; `None` where the platform or the filesystem (tmpfs, say) cannot, and appends
/// are written and then flushed instead.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
        {
            Ok(f) => return Some(f),
            Err(e) => {
                tracing::info!(error = %e, "the HL7 journal's filesystem does not take direct writes; appends are written, then flushed");
            }
        }
    }
    let _ = path;
    None
}

/// The stored message with `m`'s duplicate key, and its reply.
fn stored_original(
    lookup: &rusqlite::Connection,
    m: &Hl7Message,
) -> StoreResult<Option<(Hl7MessageId, String)>> {
    let mut statement = lookup
        .prepare_cached(
            "SELECT id, ack FROM hl7_messages WHERE org_id = ?1 AND sender = ?2 AND control_id = ?3 AND content_hash = ?4",
        )
        .map_err(|e| StoreError::Unavailable(format!("HL7 journal look-up: {e}")))?;
    let mut rows = statement
        .query(rusqlite::params![
            m.org_id.0.as_bytes().as_slice(),
            m.sender,
            m.control_id,
            m.content_hash
        ])
        .map_err(|e| StoreError::Unavailable(format!("HL7 journal look-up: {e}")))?;
    match rows
        .next()
        .map_err(|e| StoreError::Unavailable(format!("HL7 journal look-up: {e}")))?
    {
        Some(row) => {
            let id: Vec<u8> = row
                .get(0)
                .map_err(|e| StoreError::Corrupt(format!("HL7 message id: {e}")))?;
            let ack: String = row
                .get(1)
                .map_err(|e| StoreError::Corrupt(format!("HL7 message reply: {e}")))?;
            let id = Uuid::from_slice(&id)
                .map_err(|e| StoreError::Corrupt(format!("HL7 message id: {e}")))?;
            Ok(Some((Hl7MessageId(id), ack)))
        }
        None => Ok(None),
    }
}

/// Moves appended messages into the table, oldest first, until the journal is closed
/// and empty.
async fn mover(journal: Arc<Journal>, store: SqliteStore) {
    let mut last_durable = Instant::now();
    loop {
        let moved = journal.move_once(&store).await;
        if journal.wants_durable(last_durable.elapsed()) {
            match journal.make_durable().await {
                Ok(()) => last_durable = Instant::now(),
                Err(e) => {
                    tracing::error!(error = %e, "HL7 messages moved into the log could not be made durable; retrying");
                    if journal.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(MOVE_RETRY).await;
                    continue;
                }
            }
        }
        match moved {
            Ok(0) => {
                if journal.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let woken = journal.wake.notified();
                if !journal.is_empty() || journal.wants_durable(last_durable.elapsed()) {
                    continue;
                }
                // Wake for new messages, or in time to make the last ones durable.
                let _ = tokio::time::timeout(SYNC_EVERY, woken).await;
            }
            Ok(n) => {
                if n < MOVE_ROWS && !journal.stopping.load(Ordering::SeqCst) {
                    tokio::time::sleep(MOVE_GATHER).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "moving HL7 messages from the journal into the log failed; retrying");
                if journal.stopping.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(MOVE_RETRY).await;
            }
        }
    }
    journal.mover_done.store(true, Ordering::SeqCst);
    journal.stopped.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u64, raw_len: usize) -> Hl7Message {
        Hl7Message {
            id: Hl7MessageId::new(),
            org_id: OrgId(Uuid::from_u128(7)),
            interface_id: n.is_multiple_of(2).then(|| InterfaceId(Uuid::from_u128(9))),
            received_at: Timestamp::from_microsecond(1_700_000_000_000_000 + n as i64).unwrap(),
            sender: "EPIC|NORTH".into(),
            control_id: format!("C{n}"),
            content_hash: format!("{n:064x}"),
            message_type: "SIU^S12".into(),
            raw: (0..raw_len).map(|i| (i % 251) as u8).collect(),
            ack: format!("MSH|^~\\&|RAPPORT\rMSA|AA|C{n}\r"),
            ack_code: "AA".into(),
            state: if n.is_multiple_of(3) {
                Hl7State::Rejected
            } else {
                Hl7State::Pending
            },
            result: n
                .is_multiple_of(3)
                .then(|| serde_json::json!({"errors": [{"field": "PID-3"}]})),
            processed_at: n
                .is_multiple_of(3)
                .then(|| Timestamp::from_second(1_700_000_000).unwrap()),
        }
    }

    use store::{OrganizationStore, Store};

    struct World {
        store: SqliteStore,
        db: PathBuf,
        org: OrgId,
        moved: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Drop for World {
        /// The database and everything beside it (its log, the journal, the lock).
        fn drop(&mut self) {
            let (Some(dir), Some(name)) = (self.db.parent(), self.db.file_name()) else {
                return;
            };
            let name = name.to_string_lossy().into_owned();
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&name) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }

    impl World {
        async fn new() -> World {
            let db = std::env::temp_dir()
                .join(format!("rapport-journal-{}.db", Uuid::now_v7().simple()));
            let store = SqliteStore::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            store.migrate().await.unwrap();
            let org = store::contract::organization("journal");
            store.insert_organization(&org).await.unwrap();
            World {
                store,
                db,
                org: org.id,
                moved: Default::default(),
            }
        }

        fn callback(&self) -> Arc<dyn Fn() + Send + Sync> {
            let moved = self.moved.clone();
            Arc::new(move || {
                moved.fetch_add(1, Ordering::SeqCst);
            })
        }

        /// The journal without its mover: tests move by hand, or leave messages in it
        /// as a crash would.
        async fn recover(&self) -> Arc<Journal> {
            Journal::recover(&self.store, &self.db, self.callback())
                .await
                .expect("the journal is free and readable")
        }

        fn message(&self, n: u64, raw_len: usize) -> Hl7Message {
            Hl7Message {
                org_id: self.org,
                interface_id: None,
                ..message(n, raw_len)
            }
        }

        /// The log, oldest first: the messages in it and whether each is pending.
        async fn log(&self) -> Vec<Hl7Message> {
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT id FROM hl7_messages ORDER BY seq")
                .fetch_all(self.store.read())
                .await
                .unwrap();
            let mut out = Vec::new();
            for (id,) in rows {
                let id = Hl7MessageId(Uuid::from_slice(&id).unwrap());
                out.push(self.store.hl7_message(self.org, id).await.unwrap());
            }
            out
        }

        fn journal_path(&self) -> PathBuf {
            let mut name = self.db.as_os_str().to_owned();
            name.push("-hl7journal");
            PathBuf::from(name)
        }
    }

    async fn move_all(journal: &Journal, store: &SqliteStore) {
        while journal.move_once(store).await.unwrap() > 0 {}
        journal.make_durable().await.unwrap();
    }

    #[tokio::test]
    async fn appended_messages_reach_the_log_in_order_and_intact() {
        let w = World::new().await;
        let journal = Journal::open(&w.store, &w.db, w.callback()).await.unwrap();
        let sent: Vec<Hl7Message> = (1..=30)
            .map(|n| w.message(n, 500 + 37 * n as usize))
            .collect();
        for batch in sent.chunks(7) {
            assert_eq!(
                journal.append(batch).unwrap(),
                vec![Recorded::Stored; batch.len()]
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.log().await.len() < sent.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(w.log().await, sent, "every message, in the order appended");
        assert!(w.moved.load(Ordering::SeqCst) > 0, "the applier was told");
        assert!(journal.close(Duration::from_secs(5)).await);
        assert!(journal.append(&[w.message(99, 10)]).is_err(), "closed");
    }

    #[tokio::test]
    async fn duplicates_are_found_in_the_journal_in_the_log_and_in_the_batch() {
        let w = World::new().await;
        let journal = w.recover().await;
        let first = w.message(1, 100);
        let again = |m: &Hl7Message| Hl7Message {
            id: Hl7MessageId::new(),
            ack: "another reply".into(),
            ..m.clone()
        };
        let original = Recorded::Duplicate {
            original: first.id,
            ack: first.ack.clone(),
        };
        assert_eq!(
            journal.append(std::slice::from_ref(&first)).unwrap(),
            [Recorded::Stored]
        );
        // Still in the journal only.
        assert_eq!(
            journal.append(&[again(&first)]).unwrap(),
            std::slice::from_ref(&original)
        );
        move_all(&journal, &w.store).await;
        assert!(journal.ring().index.is_empty(), "forgotten once in the log");
        // In the log only.
        assert_eq!(
            journal.append(&[again(&first)]).unwrap(),
            std::slice::from_ref(&original)
        );
        // Twice in one batch, and a reused control id with other bytes (a new message).
        let second = w.message(2, 100);
        let reused = Hl7Message {
            id: Hl7MessageId::new(),
            content_hash: "f".repeat(64),
            ..first.clone()
        };
        assert_eq!(
            journal
                .append(&[second.clone(), again(&second), reused.clone()])
                .unwrap(),
            [
                Recorded::Stored,
                Recorded::Duplicate {
                    original: second.id,
                    ack: second.ack.clone()
                },
                Recorded::Stored
            ]
        );
        move_all(&journal, &w.store).await;
        assert_eq!(w.log().await, [first, second, reused]);
    }

    #[tokio::test]
    async fn a_crash_loses_nothing_appended_and_stores_nothing_twice() {
        let w = World::new().await;
        let journal = w.recover().await;
        let moved: Vec<Hl7Message> = (1..=5).map(|n| w.message(n, 300)).collect();
        let left: Vec<Hl7Message> = (6..=12).map(|n| w.message(n, 300)).collect();
        journal.append(&moved).unwrap();
        move_all(&journal, &w.store).await;
        // Moved, but the header saying so never reached the disk: the next open finds
        // them again and must not store them twice.
        let slot = encode_slot(&Slot {
            capacity: INITIAL_CAPACITY,
            checkpoint: 0,
            seq: 1_000,
        });
        {
            let mut ring = journal.ring();
            write_at(ring.file.as_mut().unwrap(), 0, &slot).unwrap();
            write_at(ring.file.as_mut().unwrap(), SLOT_LEN, &[0u8; SLOT_BYTES]).unwrap();
        }
        for m in &left {
            journal.append(std::slice::from_ref(m)).unwrap();
        }
        // The process dies: nothing more is moved, the lock goes with it.
        drop(journal);
        let reopened = w.recover().await;
        let mut expected = moved.clone();
        expected.extend(left.iter().cloned());
        assert_eq!(w.log().await, expected);
        assert!(w.moved.load(Ordering::SeqCst) > 0);
        // And it goes on from where the log ended.
        let next = w.message(13, 300);
        assert_eq!(
            reopened.append(std::slice::from_ref(&next)).unwrap(),
            [Recorded::Stored]
        );
        assert_eq!(
            reopened
                .append(&[Hl7Message {
                    id: Hl7MessageId::new(),
                    ..left[0].clone()
                }])
                .unwrap(),
            [Recorded::Duplicate {
                original: left[0].id,
                ack: left[0].ack.clone()
            }]
        );
        move_all(&reopened, &w.store).await;
        expected.push(next);
        assert_eq!(w.log().await, expected);
    }

    #[tokio::test]
    async fn a_torn_last_record_ends_the_log_there() {
        let w = World::new().await;
        let journal = w.recover().await;
        let messages: Vec<Hl7Message> = (1..=4).map(|n| w.message(n, 1000)).collect();
        for m in &messages {
            journal.append(std::slice::from_ref(m)).unwrap();
        }
        let last_start = {
            let ring = journal.ring();
            block_end(ring.queue[2].0, ring.capacity)
        };
        drop(journal);
        // Power fails while the last record is written: its tail never reaches the disk.
        let file = OpenOptions::new()
            .write(true)
            .open(w.journal_path())
            .unwrap();
        write_at(&file, HEADER_LEN + last_start + 600, &[0u8; 200]).unwrap();
        drop(file);
        let _reopened = w.recover().await;
        assert_eq!(w.log().await, messages[..3]);
    }

    #[tokio::test]
    async fn what_follows_a_torn_record_never_comes_back() {
        let w = World::new().await;
        let journal = w.recover().await;
        // One batch, never acknowledged: the power fails while it is written, and the
        // middle record is torn while the last one reached the disk whole.
        let batch: Vec<Hl7Message> = (1..=3).map(|n| w.message(n, 1000)).collect();
        journal.append(&batch).unwrap();
        let torn_at = journal.ring().queue[0].0;
        drop(journal);
        let file = OpenOptions::new()
            .write(true)
            .open(w.journal_path())
            .unwrap();
        write_at(&file, HEADER_LEN + torn_at + 100, &[0u8; 64]).unwrap();
        drop(file);
        let journal = w.recover().await;
        assert_eq!(w.log().await, batch[..1]);
        assert!(!w.journal_path().exists(), "a new file for what comes next");
        // A message exactly the size of the torn one, then another crash: the third of
        // the old batch must not be read as if it followed it.
        let next = w.message(4, 1000);
        journal.append(std::slice::from_ref(&next)).unwrap();
        drop(journal);
        let _reopened = w.recover().await;
        assert_eq!(w.log().await, [batch[0].clone(), next]);
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_read_is_refused_and_kept() {
        let w = World::new().await;
        let journal = w.recover().await;
        journal.append(&[w.message(1, 100)]).unwrap();
        drop(journal);
        // Another version's header, say.
        let file = OpenOptions::new()
            .write(true)
            .open(w.journal_path())
            .unwrap();
        write_at(&file, 8, &99u32.to_le_bytes()).unwrap();
        write_at(&file, SLOT_LEN + 8, &99u32.to_le_bytes()).unwrap();
        drop(file);
        let refused = Journal::recover(&w.store, &w.db, w.callback()).await;
        let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            why.contains("cannot be read") && why.contains("move the file aside"),
            "{why}"
        );
        assert!(w.journal_path().exists(), "kept for whoever decides");
        assert!(w.log().await.is_empty());
    }

    #[tokio::test]
    async fn the_ring_wraps_and_what_follows_a_wrap_survives_a_crash() {
        let w = World::new().await;
        let journal = w.recover().await;
        // About nine of these fill the ring: three laps.
        let mut sent = Vec::new();
        for n in 1..=27 {
            let m = w.message(n, 110_000);
            journal.append(std::slice::from_ref(&m)).unwrap();
            sent.push(m);
            if n % 4 == 0 {
                move_all(&journal, &w.store).await;
            }
        }
        assert!(journal.ring().write_lsn > 2 * INITIAL_CAPACITY);
        assert_eq!(
            journal.ring().capacity,
            INITIAL_CAPACITY,
            "no growth was needed"
        );
        drop(journal);
        let _reopened = w.recover().await;
        assert_eq!(w.log().await, sent);
    }

    #[tokio::test]
    async fn a_full_journal_waits_then_refuses_and_grows_once_empty() {
        let w = World::new().await;
        let journal = w.recover().await;
        let mut n = 0;
        let started = loop {
            n += 1;
            let started = Instant::now();
            match journal.append(&[w.message(n, 100_000)]) {
                Ok(_) => assert!(n < 20, "the ring should have filled"),
                Err(e) => {
                    assert!(e.to_string().contains("full"), "{e}");
                    break started;
                }
            }
        };
        assert!(started.elapsed() >= SPACE_WAIT, "it waited for space first");
        assert!(journal.ring().grow);
        move_all(&journal, &w.store).await;
        journal.append(&[w.message(n, 100_000)]).unwrap();
        assert_eq!(journal.ring().capacity, 2 * INITIAL_CAPACITY);
        // A message larger than the whole ring grows it at once.
        move_all(&journal, &w.store).await;
        let big = w.message(1000, 5 << 20);
        journal.append(std::slice::from_ref(&big)).unwrap();
        assert!(journal.ring().capacity >= 10 << 20);
        move_all(&journal, &w.store).await;
        assert_eq!(w.log().await.last(), Some(&big));
        assert_eq!(w.log().await.len(), n as usize + 1);
    }

    #[tokio::test]
    async fn space_is_reused_only_once_the_log_has_reached_the_disk() {
        let w = World::new().await;
        let journal = w.recover().await;
        let mut sent = Vec::new();
        let mut n = 0;
        while journal.ring().write_lsn < INITIAL_CAPACITY * 3 / 4 {
            n += 1;
            let m = w.message(n, 100_000);
            journal.append(std::slice::from_ref(&m)).unwrap();
            sent.push(m);
        }
        let start = journal.ring().moved_lsn;
        while journal.move_once(&w.store).await.unwrap() > 0 {}
        // In the log (committed without waiting for the disk), so found there…
        assert_eq!(w.log().await, sent);
        assert!(journal.ring().index.is_empty());
        // …but the journal keeps them until the log is flushed.
        assert_eq!(journal.ring().moved_lsn, start);
        assert!(
            journal.wants_durable(Duration::ZERO),
            "the ring is half full"
        );
        let big = w.message(1000, 400_000);
        let appending = {
            let journal = journal.clone();
            let big = big.clone();
            std::thread::spawn(move || journal.append(&[big]))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!appending.is_finished(), "no room yet");
        assert_eq!(journal.ring().space_waiters, 1);
        journal.make_durable().await.unwrap();
        {
            let ring = journal.ring();
            assert_eq!(ring.moved_lsn, ring.write_lsn);
        }
        assert_eq!(appending.join().unwrap().unwrap(), [Recorded::Stored]);
        // A crash now: what is only in the journal is moved at the next open, and what
        // was moved already is not stored twice.
        drop(journal);
        let _reopened = w.recover().await;
        sent.push(big);
        assert_eq!(w.log().await, sent);
    }

    #[tokio::test]
    async fn a_failed_write_stops_appending_and_keeps_what_was_stored() {
        let w = World::new().await;
        let journal = w.recover().await;
        let kept = w.message(1, 100);
        journal.append(std::slice::from_ref(&kept)).unwrap();
        {
            let mut ring = journal.ring();
            // Read-only: writes fail.
            let read_only = Arc::new(File::open(w.journal_path()).unwrap());
            ring.file = Some(read_only.clone());
            if ring.direct.is_some() {
                ring.direct = Some(read_only);
            }
        }
        let lost = w.message(2, 100);
        assert!(journal.append(std::slice::from_ref(&lost)).is_err());
        assert!(journal.ring().failed.is_some());
        assert!(
            journal.append(&[w.message(3, 100)]).is_err(),
            "no more appends"
        );
        assert!(!journal.ring().index.contains_key(&key(&lost)));
        move_all(&journal, &w.store).await;
        assert_eq!(w.log().await, [kept]);
    }

    #[tokio::test]
    async fn one_process_at_a_time_holds_the_journal() {
        let w = World::new().await;
        let journal = w.recover().await;
        journal.append(&[w.message(1, 10)]).unwrap();
        let busy = Journal::recover(&w.store, &w.db, w.callback()).await;
        assert!(
            matches!(&busy, Err(StoreError::Unavailable(why)) if why.contains("another process")),
            "{:?}",
            busy.err()
        );
        drop(journal);
        let _free = w.recover().await;
        // Its message was moved into the log by the second open.
        assert_eq!(w.log().await.len(), 1);
    }

    #[test]
    fn a_message_reads_back_as_written() {
        for n in 0..6 {
            let m = message(n, 100 + n as usize);
            let mut bytes = Vec::new();
            encode_message(&m, &mut bytes);
            assert_eq!(decode_message(&bytes), Some(m.clone()));
            // Cut anywhere, it is not a message.
            for cut in [0, 1, 16, bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(decode_message(&bytes[..cut]), None, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_torn_header_slot_leaves_the_other() {
        let a = Slot {
            capacity: 1 << 20,
            checkpoint: 4096,
            seq: 5,
        };
        let b = Slot {
            capacity: 1 << 20,
            checkpoint: 8192,
            seq: 6,
        };
        assert_eq!(decode_slot(&encode_slot(&a)), Some(a));
        let mut torn = encode_slot(&b);
        torn[22] ^= 0xFF;
        assert_eq!(decode_slot(&torn), None);
        assert_eq!(decode_slot(&[0u8; SLOT_BYTES]), None);
    }

    #[test]
    fn the_layout_pads_the_tail_of_the_ring_and_each_append_to_a_block() {
        // Each append ends on a block boundary…
        assert_eq!(layout_end(0, 1 << 20, &[40, 40]), BLOCK);
        assert_eq!(layout_end(0, 1 << 20, &[4000]), BLOCK);
        // …or the next one, when the gap is too short for a padding record…
        assert_eq!(layout_end(0, 1 << 20, &[4080]), 2 * BLOCK);
        // …unless the ring ends there.
        assert_eq!(layout_end(0, 2 * BLOCK, &[2 * BLOCK - 16]), 2 * BLOCK);
        // A record that does not fit before the end of the ring starts the next lap.
        assert_eq!(layout_end(BLOCK, 2 * BLOCK, &[5000]), 2 * BLOCK + 2 * BLOCK);
        assert_eq!(block_end(96, 1 << 20), BLOCK);
        assert_eq!(block_end(BLOCK, 1 << 20), BLOCK);
    }
}
