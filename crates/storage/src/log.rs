//! [`Storage`]: the segmented write-ahead log that holds the Raft entries, the hard state and
//! the membership of one node, and the [`LogView`] the core reads it through.
//!
//! # Files
//!
//! The data directory holds `LOCK` (see [`crate::disk::Disk::lock`]), segment files named
//! `{seq:016x}.wal`, at most one [`PREPARED_SEGMENT_NAME`] (the next segment, prepared ahead
//! of need), and snapshot files (see [`crate::snapshot`]). Segments are preallocated
//! ([`crate::disk::DiskFile::allocate`], `fallocate` on Linux) to
//! [`Options::segment_bytes_max`] and hold frames ([`crate::record`]). Each segment starts with a
//! [`SegmentHeader`] record carrying the whole state at that point (snapshot point, last entry,
//! hard state, membership), so whole old segments can be deleted after compaction and no live
//! data is ever rewritten.
//!
//! # Operations are records
//!
//! Every mutation is a record appended to the active segment: an entry, a truncation of a
//! suffix, a hard state, a membership, a compaction of a prefix, a reset to a snapshot. Replay
//! applies them in order. An append that overwrites a conflicting suffix first writes a
//! truncation record, so on disk every entry record follows the last index exactly and replay
//! can reject any gap.
//!
//! # Durability: group commit
//!
//! `append`, `truncate_suffix`, `compact`, `reset_to_snapshot`, `set_hard_state` and
//! `set_membership` only encode records into a write buffer (written to the file when it fills):
//! they never wait for the disk. [`Storage::sync`] writes the buffer and issues **one**
//! `fdatasync` for everything issued before it. The caller (the replica loop) batches many
//! operations per sync. To overlap the fsync with new work, split it:
//! [`Storage::begin_sync`] writes the buffer and returns a [`SyncTicket`] that can be waited on
//! by another thread ([`SyncTicket::wait`]) while the loop keeps appending; operations issued
//! after `begin_sync` join the next sync. [`Storage::finish_sync`] then reports the outcome. One
//! exception: when the active segment is full, the operation that needs the room seals it with
//! an fsync before starting the next segment (once per segment), so that a sealed segment is
//! always wholly durable before its successor exists.
//!
//! # File work off the caller's thread
//!
//! The storage starts no threads. Its slow file work rides on the sync ticket instead, whose
//! [`SyncTicket::wait`] runs wherever the caller runs syncs (the server: a sync thread): after
//! the fsync, it deletes the segments that a durable compaction released, and prepares the
//! next segment file (created as [`PREPARED_SEGMENT_NAME`], preallocated, fsynced);
//! [`Storage::finish_sync`] takes the prepared file back. A rollover then only renames it
//! into place and queues the header; the next ticket fsyncs the directory after the file, so
//! the new name is durable with the data. When no prepared file is ready (no sync since the
//! last rollover), a rollover creates the segment inline as before. Deletions wait for the
//! sync after the one that released them, so [`Storage::sync`] alone leaves the files until
//! the next sync; recovery replays such segments like any other.
//!
//! A failed fsync is fatal: the storage returns [`StorageError::SyncFailed`] and refuses every
//! later write ([`StorageError::Poisoned`]); it never retries the same fsync, because after a
//! failure the kernel may already have dropped the dirty pages.
//!
//! # A full disk
//!
//! Running out of space (`ENOSPC`, or `EDQUOT` for a quota) is not a failure of the disk, and
//! it is not fatal: the operation that found no space returns [`StorageError::NoSpace`], the
//! storage is not poisoned, and the caller retries once space is freed. Segments are
//! preallocated, so appends into the active segment never run out of space on a filesystem
//! that supports `fallocate`; what can are the things that need new space:
//!
//! - **A rollover** that must create the next segment (no prepared file at hand): the full
//!   segment stays active and the operation that needed the room fails. An [`Storage::append`]
//!   may then have taken a prefix of its batch; calling it again with the same batch (the
//!   caller's retry) truncates that prefix and writes the whole batch, so a retry is always
//!   safe. The other operations fail before they change anything.
//! - **A segment preparation** in [`SyncTicket::wait`]: its file is removed, the sync still
//!   counts (its fsync succeeded), and the preparation is tried again only after
//!   [`PREPARE_SKIP_SYNCS_AFTER_NO_SPACE`] syncs.
//! - **A write of the buffer** on a filesystem without preallocation: the buffer is kept and
//!   `write_offset` stays at the last good offset, so the retry writes the same bytes over any
//!   prefix a short write left (see `flush`); a buffered operation counts as done, and the
//!   failure is reported by the next [`Storage::begin_sync`], which makes no ticket.
//! - **Snapshot files** ([`crate::snapshot`]): the temporary file is removed.
//!
//! Nothing written is ever reported durable without a successful fsync, so a caller that
//! acknowledges only what a finished sync covers (the replica, by Raft's rules) never
//! acknowledges what a full disk refused. A failed fsync stays fatal whatever its error code.
//!
//! # The crash guarantee
//!
//! After a crash, [`Storage::open`] recovers the state reached by **some prefix of the
//! operations issued, and that prefix contains every operation issued before the last
//! successful sync**. So: everything synced is there; of the unsynced operations, some prefix
//! may have survived (possibly none, possibly all), never a later one without the earlier ones,
//! never a torn entry; an entry truncated before a sync never reappears (its truncation record
//! precedes the sync), while one truncated after the last sync may (the truncation was not
//! durable, the entry was).
//!
//! # Recovery
//!
//! A leftover [`PREPARED_SEGMENT_NAME`] is removed first, whatever it holds: it was never a
//! segment, or it was renamed into place and the rename did not survive the crash, in which
//! case nothing in it was ever synced under a segment name. Segments are replayed in sequence
//! order; released segments whose deletion did not happen are replayed and released again. In
//! the last segment, a record that runs into zeros
//! (see [`crate::record`]) is a torn write: it is cut off with a warning, and the rest of the
//! segment is zeroed so that stale bytes can never be parsed later. Anything else that does not
//! check out — a bad checksum before the tail, a record that decodes to nonsense, an entry that
//! does not follow the last index, a term that goes backwards, a segment missing from the
//! sequence or whose header disagrees with the replay — stops [`Storage::open`] with
//! [`StorageError::Corrupt`] naming the file and offset.
//!
//! The line between "torn" and "corrupt" is drawn so that a bit flip in a complete record is
//! never taken for a torn write, even in the very last record: a torn write leaves a prefix of
//! what was written, so the bytes from the cut to the end of the segment are zero and in
//! particular the record's end marker is; a complete record's end marker never is. An all-zero
//! header ends the data; if non-zero bytes follow it in the last segment, they are writes that
//! reached the disk out of order before a crash and were never synced (a sync covers every
//! earlier write), and they are discarded with a warning. Two consequences to know: a disk
//! that tears a write *out of order* (keeps a later sector of a record but not an earlier
//! one) makes the tail look corrupt and [`Storage::open`] refuses it, which is safe but needs
//! an operator; and a disk that silently zeroes a whole record header at the tail of the last
//! segment loses the records after it, which no format without a separate durable "synced up
//! to" pointer can tell from an unsynced tail.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tenure_raft::{
    Entry, EntryId, HardState, InitialState, LogError, LogIndex, LogView, Membership, Term,
};

use crate::disk::{DirLock, Disk, DiskFile};
use crate::error::StorageError;
use crate::record::{self, FrameError, Record, SegmentHeader};
use crate::snapshot::{SnapshotMeta, SnapshotReader};

/// Limits of a [`Storage`]. Check them with [`Options::validate`] (also done by
/// [`Storage::open`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Size every segment file is preallocated to; a record never spans two segments.
    pub segment_bytes_max: u64,
    /// Largest entry payload accepted by [`Storage::append`].
    pub entry_bytes_max: u64,
    /// Largest encoded membership accepted by [`Storage::set_membership`].
    pub membership_bytes_max: u64,
    /// Encoded records are written to the file once this many bytes are buffered (and at every
    /// sync).
    pub write_buffer_bytes_max: u64,
    /// Recent entries kept in memory for [`LogView::entries`]; older ones are read from disk.
    pub cache_bytes_max: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes_max: 64 << 20,
            entry_bytes_max: 8 << 20,
            membership_bytes_max: 64 << 10,
            write_buffer_bytes_max: 1 << 20,
            cache_bytes_max: 64 << 20,
        }
    }
}

impl Options {
    /// Checks that the limits are usable together: a segment must hold its header (with the
    /// largest membership) plus the largest entry, and offsets must fit in 32 bits.
    pub fn validate(&self) -> Result<(), StorageError> {
        let fail = |reason: String| Err(StorageError::InvalidOptions { reason });
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > u64::from(u32::MAX) {
            return fail(format!(
                "segment_bytes_max {} is outside 4096..=4294967295",
                self.segment_bytes_max
            ));
        }
        if self.entry_bytes_max == 0 || self.membership_bytes_max < 64 {
            return fail("entry_bytes_max must be positive and membership_bytes_max >= 64".into());
        }
        let needed = self.header_frame_bytes_max()
            + record::entry_frame_bytes(self.entry_bytes_max as usize) as u64;
        if needed > self.segment_bytes_max {
            return fail(format!(
                "segment_bytes_max {} cannot hold a segment header and an entry of \
                 entry_bytes_max {} ({needed} bytes needed)",
                self.segment_bytes_max, self.entry_bytes_max
            ));
        }
        if self.write_buffer_bytes_max == 0 {
            return fail("write_buffer_bytes_max must be positive".into());
        }
        Ok(())
    }

    /// The largest segment header frame: type, seq, two ids, hard state, membership.
    fn header_frame_bytes_max(&self) -> u64 {
        (record::FRAME_OVERHEAD_BYTES + 1 + 8 + 32 + 25) as u64 + self.membership_bytes_max
    }
}

/// Where an entry's record lives.
#[derive(Clone, Copy, Debug)]
struct Slot {
    term: Term,
    /// The segment's sequence number; [`HOLE`] during replay for entries whose segment was
    /// deleted (they must be compacted away before replay ends).
    seq: u64,
    offset: u32,
    frame_bytes: u32,
}

const HOLE: u64 = u64::MAX;

impl Slot {
    fn data_bytes(&self) -> u64 {
        (self.frame_bytes as usize - record::entry_frame_bytes(0)) as u64
    }
}

struct Segment {
    seq: u64,
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// The log's last index when the segment was sealed; `None` for the active segment. Every
    /// entry still live in the segment is at or below it, so once the durable snapshot point
    /// reaches it the segment can be deleted.
    sealed_last: Option<LogIndex>,
}

/// The durable log, hard state and membership of one node. See the module documentation.
///
/// Dropping a `Storage` releases the directory lock; operations issued since the last
/// successful sync may or may not survive, exactly as in a crash.
pub struct Storage {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    options: Options,
    _lock: Box<dyn DirLock>,
    /// Invariant: non-empty, consecutive `seq`s; the last one is active and only it is unsealed.
    segments: VecDeque<Segment>,
    /// File offset in the active segment where `buf` starts.
    /// Invariant: `write_offset + buf.len() <= segment_bytes_max`.
    write_offset: u64,
    /// Records encoded but not yet written to the active segment.
    buf: Vec<u8>,
    /// The snapshot point: `first_index - 1` and its term.
    base: EntryId,
    /// `slots[i]` locates the entry at index `base.index + 1 + i`.
    slots: VecDeque<Slot>,
    /// The last `cache.len()` entries of the log. Invariant: `cache.len() <= slots.len()`.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    hard_state: HardState,
    membership: Membership,
    /// Set by the first failed write or sync; every later write is refused.
    poisoned: Option<String>,
    /// Whether a [`SyncTicket`] is out.
    sync_in_flight: bool,
    /// The next segment file, prepared by a sync ticket (see [`SyncTicket::wait`]): named
    /// [`PREPARED_SEGMENT_NAME`], preallocated to `segment_bytes_max`, zero, synced. A
    /// rollover renames it into place instead of creating and syncing a file on the caller's
    /// thread. Invariant: `None` while a ticket that prepares one is out.
    prepared: Option<Arc<dyn DiskFile>>,
    /// Whether a segment was renamed into place since the last directory sync: the next
    /// sync must make its name durable along with its data.
    names_unsynced: bool,
    /// Sealed segments that a durable compaction released, oldest first, for the next sync
    /// ticket to delete. They are out of `segments` already; on disk, recovery tolerates them.
    released: Vec<PathBuf>,
    /// The newest durable snapshot file's metadata, found at open or noted since.
    snapshot: Option<SnapshotMeta>,
    /// See [`Storage::no_space_count`].
    no_space_count: u64,
    /// Sync tickets to issue without a segment preparation, after one found no space.
    prepare_skip_syncs: u32,
}

/// After a segment preparation found no space, this many syncs go by before the next try.
pub const PREPARE_SKIP_SYNCS_AFTER_NO_SPACE: u32 = 64;

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.dir)
            .field("base", &self.base)
            .field("last_index", &self.last_index())
            .field("hard_state", &self.hard_state)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// A sync begun by [`Storage::begin_sync`]: everything issued before it is written and waits
/// for one fsync. [`SyncTicket::wait`] may run on any thread.
///
/// The ticket also carries the storage's background file work, so that it runs wherever the
/// caller runs the sync (the server: its sync thread) and never on the thread that appends:
/// deleting segments that compaction released, and preparing the next segment file.
#[must_use = "a sync ticket must be waited on and passed to Storage::finish_sync"]
#[derive(Debug)]
pub struct SyncTicket {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    seq: u64,
    last_index: LogIndex,
    base: EntryId,
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// Sync the directory after the file: a segment was renamed into place since the last
    /// directory sync, and its name must be as durable as its data.
    sync_dir: bool,
    /// Segment files to delete, oldest first.
    release: Vec<PathBuf>,
    /// Prepare the next segment file, of this size.
    prepare_bytes: Option<u64>,
    /// Set once the fsyncs and deletions succeeded, before the preparation: a failure after
    /// it is the preparation's.
    fsync_done: bool,
}

/// The outcome of [`SyncTicket::wait`], to hand to [`Storage::finish_sync`].
#[must_use = "pass the finished sync to Storage::finish_sync"]
#[derive(Debug)]
pub struct FinishedSync {
    ticket: SyncTicket,
    result: Result<(), StorageError>,
    prepared: Option<Arc<dyn DiskFile>>,
    /// The preparation of the next segment failed for lack of space (not fatal: the sync
    /// itself succeeded, and a rollover without a prepared file creates one inline).
    prepare_no_space: Option<StorageError>,
}

impl SyncTicket {
    /// Issues the fsync and waits for it, then does the storage's background file work.
    /// Blocks; call it where blocking is fine.
    ///
    /// In order: fsync of the active segment (and of the directory if a segment was renamed
    /// into place since the last one), which is what makes the operations durable; then the
    /// deletion of released segments, oldest first, each made durable (directory fsync) before
    /// the next, so that a crash only ever leaves a suffix of the segments; then, if the
    /// storage holds no prepared segment, the preparation of one: created as
    /// [`PREPARED_SEGMENT_NAME`], preallocated ([`DiskFile::allocate`]) and fsynced. Its name
    /// is made durable only by the rename that puts it into use; a leftover is removed at
    /// open. Any failure is reported by [`Storage::finish_sync`] and is fatal, like every
    /// failed disk operation of a write, except a preparation that finds no space: its file
    /// is removed and the sync counts as done (see "A full disk" in the module documentation).
    pub fn wait(mut self) -> FinishedSync {
        let mut prepared = None;
        let mut prepare_no_space = None;
        let mut result = self.run(&mut prepared);
        if let Err(e) = &result
            && e.is_no_space()
            && self.fsync_done
        {
            let path = self.dir.join(PREPARED_SEGMENT_NAME);
            tracing::warn!(file = %path.display(), "no space to prepare the next segment: {e}");
            // Give the space back; a leftover is removed at open or reused by the next try.
            let _ = self.disk.remove(&path);
            prepare_no_space = result.err();
            result = Ok(());
        }
        FinishedSync { ticket: self, result, prepared, prepare_no_space }
    }

    fn run(&mut self, prepared: &mut Option<Arc<dyn DiskFile>>) -> Result<(), StorageError> {
        let dir_failed =
            |dir: &Path, e| StorageError::SyncFailed { file: dir.to_path_buf(), source: e };
        crate::failpoint!("log-sync-before");
        self.file
            .sync()
            .map_err(|e| StorageError::SyncFailed { file: self.path.clone(), source: e })?;
        crate::failpoint!("log-sync-after");
        if self.sync_dir {
            self.disk.sync_dir(&self.dir).map_err(|e| dir_failed(&self.dir, e))?;
        }
        for path in std::mem::take(&mut self.release) {
            match self.disk.remove(&path) {
                Ok(()) => {}
                // Gone already: nothing to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(&path, e)),
            }
            self.disk.sync_dir(&self.dir).map_err(|e| dir_failed(&self.dir, e))?;
        }
        // Everything the ticket covers is durable; what follows is the file work.
        self.fsync_done = true;
        if let Some(len) = self.prepare_bytes {
            let path = self.dir.join(PREPARED_SEGMENT_NAME);
            let io = |e| StorageError::io(&path, e);
            let file = self.disk.open(&path, true).map_err(io)?;
            // A leftover of a preparation that failed half-way: start from zero bytes.
            if file.size_bytes().map_err(io)? != 0 {
                file.set_len(0).map_err(io)?;
            }
            file.allocate(len).map_err(io)?;
            file.sync().map_err(|e| StorageError::SyncFailed { file: path.clone(), source: e })?;
            *prepared = Some(file);
        }
        Ok(())
    }

    /// The last index of the log when the sync began.
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }
}

/// The name of the next segment file while it is being prepared, and until a rollover renames
/// it into place (see [`SyncTicket::wait`]). Not a segment name: recovery removes it.
pub const PREPARED_SEGMENT_NAME: &str = "next-segment.prepared";

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The state rebuilt by replaying segments.
struct Replay {
    base: EntryId,
    slots: VecDeque<Slot>,
    hard_state: HardState,
    membership: Membership,
}

impl Replay {
    fn last_index(&self) -> LogIndex {
        self.base.index.plus(self.slots.len() as u64)
    }

    /// The term of the last entry; `None` if unknown (inside a hole).
    fn last_term(&self) -> Option<Term> {
        match self.slots.back() {
            None => Some(self.base.term),
            Some(s) if s.seq == HOLE && s.term == Term(0) => None,
            Some(s) => Some(s.term),
        }
    }

    fn last_id(&self) -> Option<EntryId> {
        Some(EntryId::new(self.last_term()?, self.last_index()))
    }

    /// Applies one record found at `offset` of segment `seq`. Errors are the reason for a
    /// [`StorageError::Corrupt`].
    fn apply(
        &mut self,
        rec: Record<'_>,
        seq: u64,
        first_segment: bool,
        offset: u64,
        frame_bytes: usize,
    ) -> Result<(), String> {
        let last = self.last_index();
        match rec {
            Record::SegmentHeader(h) => {
                if offset != 0 {
                    return Err("segment header in the middle of a segment".into());
                }
                if h.seq != seq {
                    return Err(format!("segment header says seq {} in file of seq {seq}", h.seq));
                }
                if h.last.index < h.base.index {
                    return Err(format!("segment header last {} before base {}", h.last, h.base));
                }
                if first_segment {
                    // Entries between base and last lived in deleted segments; a compaction
                    // later in the log must cover them (checked when replay ends).
                    self.base = h.base;
                    self.slots.clear();
                    for i in h.base.index.0 + 1..=h.last.index.0 {
                        let term = if i == h.last.index.0 { h.last.term } else { Term(0) };
                        self.slots.push_back(Slot { term, seq: HOLE, offset: 0, frame_bytes: 0 });
                    }
                    self.hard_state = h.hard_state;
                    self.membership = h.membership;
                } else {
                    let ours = (self.base, self.last_id(), self.hard_state, &self.membership);
                    let theirs = (h.base, Some(h.last), h.hard_state, &h.membership);
                    if ours != theirs {
                        return Err(format!(
                            "segment header (base {}, last {}, {:?}) disagrees with the \
                             preceding segments (base {}, last {:?}, {:?}): a segment is \
                             missing or damaged",
                            h.base,
                            h.last,
                            h.hard_state,
                            self.base,
                            self.last_id(),
                            self.hard_state
                        ));
                    }
                }
            }
            _ if offset == 0 => return Err("segment does not start with a segment header".into()),
            Record::Entry { id, .. } => {
                if id.index != last.next() {
                    return Err(format!("entry {id} does not follow the last index {last} (gap)"));
                }
                if let Some(prev) = self.last_term()
                    && id.term < prev
                {
                    return Err(format!("entry {id} goes back from term {prev}"));
                }
                self.slots.push_back(Slot {
                    term: id.term,
                    seq,
                    offset: offset as u32,
                    frame_bytes: frame_bytes as u32,
                });
            }
            Record::Truncate { from } => {
                if from <= self.base.index || from > last {
                    return Err(format!(
                        "truncation from {from} outside the log {}..={last}",
                        self.base.index.next()
                    ));
                }
                self.slots.truncate((from.0 - self.base.index.0 - 1) as usize);
            }
            Record::HardState(hs) => {
                if hs.term < self.hard_state.term {
                    return Err(format!(
                        "hard state term goes back from {} to {}",
                        self.hard_state.term, hs.term
                    ));
                }
                self.hard_state = hs;
            }
            Record::Membership(m) => self.membership = m,
            Record::Compact { upto } => {
                if upto.index <= self.base.index || upto.index > last {
                    return Err(format!(
                        "compaction to {upto} outside the log {}..={last}",
                        self.base.index.next()
                    ));
                }
                let n = (upto.index.0 - self.base.index.0) as usize;
                let slot = self.slots[n - 1];
                if !(slot.seq == HOLE && slot.term == Term(0)) && slot.term != upto.term {
                    return Err(format!(
                        "compaction to {upto} but the entry there has term {}",
                        slot.term
                    ));
                }
                self.slots.drain(..n);
                self.base = upto;
            }
            Record::Reset { base, membership } => {
                if base.index < self.base.index {
                    return Err(format!("reset to {base} before the snapshot point {}", self.base));
                }
                self.slots.clear();
                self.base = base;
                self.membership = membership;
            }
        }
        Ok(())
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

impl Storage {
    /// Opens (or creates) the storage in `dir`: takes the directory lock, replays the log and
    /// repairs a torn tail. Fails with [`StorageError::Locked`] if another process holds the
    /// directory, and with [`StorageError::Corrupt`] (naming file and offset) on any damage
    /// other than a torn tail.
    ///
    /// A fresh storage has an empty log, a default hard state and an empty
    /// [`Membership`]; the bootstrapping caller sets the first membership.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: impl Into<PathBuf>,
        options: Options,
    ) -> Result<Storage, StorageError> {
        options.validate()?;
        let dir = dir.into();
        disk.create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        // The directory's own name must be durable too, or acknowledged data could vanish
        // with it (it may have just been created).
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        disk.sync_dir(&parent)
            .map_err(|e| StorageError::SyncFailed { file: parent.clone(), source: e })?;
        let lock = disk.lock(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                StorageError::Locked { dir: dir.clone() }
            } else {
                StorageError::io(&dir, e)
            }
        })?;
        let names = disk.list(&dir).map_err(|e| StorageError::io(&dir, e))?;
        // Leftovers of snapshots being written when the process stopped.
        // Also a segment file prepared ahead of need but never put into use.
        let temps: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(crate::snapshot::TEMP_SUFFIX) || *n == PREPARED_SEGMENT_NAME)
            .collect();
        for name in &temps {
            let path = dir.join(name);
            disk.remove(&path).map_err(|e| StorageError::io(&path, e))?;
        }
        if !temps.is_empty() {
            disk.sync_dir(&dir)
                .map_err(|e| StorageError::SyncFailed { file: dir.clone(), source: e })?;
        }
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            if w[1] != w[0] + 1 {
                return Err(StorageError::corrupt(
                    dir.join(segment_name(w[1])),
                    0,
                    format!(
                        "segment sequence gap: expected {} after {}",
                        segment_name(w[0] + 1),
                        segment_name(w[0])
                    ),
                ));
            }
        }
        let mut storage = Storage {
            disk,
            dir,
            options,
            _lock: lock,
            segments: VecDeque::new(),
            write_offset: 0,
            buf: Vec::new(),
            base: EntryId::default(),
            slots: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            hard_state: HardState::default(),
            membership: Membership::default(),
            poisoned: None,
            sync_in_flight: false,
            prepared: None,
            names_unsynced: false,
            released: Vec::new(),
            snapshot: None,
            no_space_count: 0,
            prepare_skip_syncs: 0,
        };
        storage.snapshot =
            SnapshotReader::open_latest(&*storage.disk, &storage.dir)?.map(|r| r.meta().clone());
        storage.recover(&seqs)?;
        storage.check_invariants();
        Ok(storage)
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    fn recover(&mut self, seqs: &[u64]) -> Result<(), StorageError> {
        let mut replay = Replay {
            base: EntryId::default(),
            slots: VecDeque::new(),
            hard_state: HardState::default(),
            membership: Membership::default(),
        };
        // (valid end, whether bytes past it must be zeroed) of the last replayed segment.
        let mut tail = (0u64, false);
        for (k, &seq) in seqs.iter().enumerate() {
            let path = self.path_of(seq);
            let file = self.disk.open(&path, false).map_err(|e| StorageError::io(&path, e))?;
            let len = file.size_bytes().map_err(|e| StorageError::io(&path, e))?;
            let mut data = vec![0u8; len as usize];
            file.read_at(&mut data, 0).map_err(|e| StorageError::io(&path, e))?;
            let is_last = k + 1 == seqs.len();
            let (end, dirty) =
                Self::replay_segment(&mut replay, &path, seq, k == 0, is_last, &data)?;
            if end == 0 {
                assert!(is_last, "replay_segment accepts an empty segment only at the end");
                // Not even a header survived: the segment was created just before a crash and
                // never synced. Only possible for the last segment (replay_segment refuses an
                // empty sealed segment); drop it and continue in the previous one.
                if k == 0 && seq != 1 {
                    return Err(StorageError::corrupt(
                        &path,
                        0,
                        "the only segment has no header, but earlier segments were deleted",
                    ));
                }
                tracing::warn!(file = %path.display(), "removing a segment with no complete header (created just before a crash)");
                drop(file);
                self.disk.remove(&path).map_err(|e| StorageError::io(&path, e))?;
                self.disk
                    .sync_dir(&self.dir)
                    .map_err(|e| StorageError::SyncFailed { file: self.dir.clone(), source: e })?;
                break;
            }
            self.segments.push_back(Segment { seq, path, file, sealed_last: None });
            tail = (end, dirty);
        }
        if let Some(hole) = replay.slots.front()
            && hole.seq == HOLE
        {
            let first = &self.segments.front().map(|s| s.path.clone()).unwrap_or_default();
            let holes = replay.slots.iter().take_while(|s| s.seq == HOLE).count() as u64;
            return Err(StorageError::corrupt(
                first,
                0,
                format!(
                    "entries {}..={} are missing: their segment was deleted but they were never \
                     compacted",
                    replay.base.index.next(),
                    replay.base.index.plus(holes)
                ),
            ));
        }
        self.base = replay.base;
        self.slots = replay.slots;
        self.hard_state = replay.hard_state;
        self.membership = replay.membership;
        self.fix_sealed_last();
        match self.segments.back() {
            None => self.start_segment(1)?,
            Some(active) => {
                let (end, dirty) = tail;
                let file = Arc::clone(&active.file);
                let path = active.path.clone();
                let len = file.size_bytes().map_err(|e| StorageError::io(&path, e))?;
                if dirty || len != self.options.segment_bytes_max {
                    // Zero everything after the valid end so stale bytes can never be read as
                    // records once new ones are written next to them, then restore the
                    // preallocation.
                    let io = |e| StorageError::io(&path, e);
                    file.set_len(end).map_err(io)?;
                    file.allocate(self.options.segment_bytes_max.max(end))
                        .map_err(|e| StorageError::io(&path, e))?;
                    file.sync()
                        .map_err(|e| StorageError::SyncFailed { file: path.clone(), source: e })?;
                }
                self.write_offset = end;
            }
        }
        Ok(())
    }

    /// Recomputes `sealed_last` of every sealed segment from the slots: the highest index whose
    /// entry lives in it or an earlier segment. Entries compacted away no longer matter, so the
    /// snapshot point stands in for them.
    fn fix_sealed_last(&mut self) {
        let n = self.segments.len();
        for k in 0..n.saturating_sub(1) {
            let seq = self.segments[k].seq;
            // Slots are in index order and their segments never go backwards, so the entries
            // living in segments up to `seq` are a prefix of the slots.
            let count = self.slots.partition_point(|s| s.seq <= seq);
            self.segments[k].sealed_last = Some(self.base.index.plus(count as u64));
        }
        if let Some(last) = self.segments.back_mut() {
            last.sealed_last = None;
        }
    }

    /// Replays one segment's bytes. Returns the end of its valid records and whether bytes
    /// after that end must be zeroed (a torn tail or unsynced leftovers).
    fn replay_segment(
        replay: &mut Replay,
        path: &Path,
        seq: u64,
        first_segment: bool,
        is_last: bool,
        data: &[u8],
    ) -> Result<(u64, bool), StorageError> {
        let mut pos = 0usize;
        loop {
            if pos == data.len() {
                if pos == 0 && !is_last {
                    return Err(StorageError::corrupt(path, 0, "sealed segment is empty"));
                }
                return Ok((pos as u64, false));
            }
            match record::decode_frame(&data[pos..]) {
                Ok(frame) => {
                    let rec = record::decode_record(frame.body).map_err(|reason| {
                        StorageError::corrupt(
                            path,
                            pos as u64,
                            format!("undecodable record: {reason}"),
                        )
                    })?;
                    replay
                        .apply(rec, seq, first_segment, pos as u64, frame.frame_bytes)
                        .map_err(|reason| StorageError::corrupt(path, pos as u64, reason))?;
                    pos += frame.frame_bytes;
                }
                Err(FrameError::Zero) => {
                    let rest_zero = all_zero(&data[pos..]);
                    if pos == 0 && !is_last {
                        return Err(StorageError::corrupt(path, 0, "sealed segment has no header"));
                    }
                    if !rest_zero {
                        if !is_last {
                            return Err(StorageError::corrupt(
                                path,
                                pos as u64,
                                "zeroed record header followed by data in a sealed segment",
                            ));
                        }
                        // Writes after this point reached the disk while an earlier one did
                        // not: none of them was synced (a sync covers every earlier write).
                        tracing::warn!(file = %path.display(), offset = pos, "discarding unsynced data after a gap of zeros at the end of the log");
                    }
                    return Ok((pos as u64, !rest_zero));
                }
                Err(e) => {
                    let from = (pos + e.torn_check_from()).min(data.len());
                    if is_last && all_zero(&data[from..]) {
                        tracing::warn!(
                            file = %path.display(),
                            offset = pos,
                            reason = %e.describe(),
                            "cutting off a torn record at the end of the log"
                        );
                        return Ok((pos as u64, true));
                    }
                    return Err(StorageError::corrupt(path, pos as u64, e.describe()));
                }
            }
        }
    }

    /// Creates segment `seq`, preallocated and durable (file and name), and queues its header.
    /// The slow path of a rollover, when no prepared segment is at hand (see
    /// [`Storage::start_prepared_segment`]), and the first segment of a new log.
    fn start_segment(&mut self, seq: u64) -> Result<(), StorageError> {
        let path = self.path_of(seq);
        let result: Result<Arc<dyn DiskFile>, StorageError> = (|| {
            let file = self.disk.open(&path, true).map_err(|e| StorageError::io(&path, e))?;
            file.allocate(self.options.segment_bytes_max)
                .map_err(|e| StorageError::io(&path, e))?;
            file.sync().map_err(|e| StorageError::SyncFailed { file: path.clone(), source: e })?;
            self.disk
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::SyncFailed { file: self.dir.clone(), source: e })?;
            Ok(file)
        })();
        if let Err(e) = &result
            && e.is_no_space()
        {
            // Give back what the failed allocation took. The file holds no header yet: if the
            // removal fails too, recovery drops it as a segment created just before a crash,
            // and the next attempt reuses it.
            if self.disk.remove(&path).is_ok() {
                let _ = self.disk.sync_dir(&self.dir);
            }
        }
        let file = self.poison_on_error(result)?;
        self.push_segment(seq, path, file);
        Ok(())
    }

    /// Puts the prepared segment file into use as segment `seq`: a rename, no sync. The next
    /// sync ticket syncs the directory after the file, so the name is durable with the data;
    /// until then a crash leaves the file under its old name (removed at open) or under the
    /// new one, empty or with a header (recovery handles both, as for a fresh segment).
    fn start_prepared_segment(
        &mut self,
        seq: u64,
        file: Arc<dyn DiskFile>,
    ) -> Result<(), StorageError> {
        let path = self.path_of(seq);
        let from = self.dir.join(PREPARED_SEGMENT_NAME);
        let r = self.disk.rename(&from, &path).map_err(|e| StorageError::io(&from, e));
        self.poison_on_error(r)?;
        self.names_unsynced = true;
        self.push_segment(seq, path, file);
        Ok(())
    }

    /// Makes a new, empty file the active segment `seq` and queues its header.
    fn push_segment(&mut self, seq: u64, path: PathBuf, file: Arc<dyn DiskFile>) {
        self.segments.push_back(Segment { seq, path, file, sealed_last: None });
        self.write_offset = 0;
        assert!(self.buf.is_empty(), "buffer flushed before a new segment");
        let header = SegmentHeader {
            seq,
            base: self.base,
            last: self.last_id(),
            hard_state: self.hard_state,
            membership: self.membership.clone(),
        };
        record::encode_segment_header(&mut self.buf, &header);
    }

    /// Poisons the storage on a failure, unless it is [`StorageError::NoSpace`]: a write that
    /// did not fit changed nothing durable and is retried as a whole (see "A full disk" in the
    /// module documentation), so the storage stays usable.
    fn poison_on_error<T>(&mut self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            if e.is_no_space() {
                self.no_space_count += 1;
            } else if self.poisoned.is_none() {
                self.poisoned = Some(e.to_string());
            }
        }
        r
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("there is always an active segment")
    }

    /// Writes the buffer to the active segment. `write_offset` moves only once the whole
    /// buffer is written: after a failure for lack of space (a short write possibly before it)
    /// the buffer is kept, and the next flush writes it again from the last good offset, over
    /// whatever prefix of it reached the file. The bytes there are the same, so no torn or
    /// stale record is ever left between good ones.
    fn flush(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let active = self.active();
        let r = active
            .file
            .write_at(&self.buf, self.write_offset)
            .map_err(|e| StorageError::io(&active.path, e));
        self.poison_on_error(r)?;
        self.write_offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Makes room for a frame of `frame_bytes` in the active segment, sealing it and starting
    /// the next one if needed. Returns the frame's offset in the active segment.
    fn reserve(&mut self, frame_bytes: usize) -> Result<u64, StorageError> {
        self.check_usable()?;
        let end = self.write_offset + self.buf.len() as u64 + frame_bytes as u64;
        if end > self.options.segment_bytes_max {
            // Seal the active segment. This fsync stays on the caller's thread: a sealed
            // segment must be wholly durable before its successor's name can be (a rename may
            // reach the disk at any time), or a crash could leave a successor behind a sealed
            // segment with a torn tail, which recovery must call corrupt.
            self.flush()?;
            let active = self.active();
            let r = active
                .file
                .sync()
                .map_err(|e| StorageError::SyncFailed { file: active.path.clone(), source: e });
            self.poison_on_error(r)?;
            let last = self.last_index();
            let seq = self.active().seq + 1;
            self.segments.back_mut().expect("active").sealed_last = Some(last);
            let started = match self.prepared.take() {
                Some(file) => self.start_prepared_segment(seq, file),
                None => self.start_segment(seq),
            };
            if let Err(e) = started {
                // No room for the next segment: the full one stays active (its sealing fsync
                // did no harm) and the caller retries once space is freed.
                if e.is_no_space() {
                    self.segments.back_mut().expect("active").sealed_last = None;
                }
                return Err(e);
            }
        }
        let offset = self.write_offset + self.buf.len() as u64;
        assert!(
            offset + frame_bytes as u64 <= self.options.segment_bytes_max,
            "a frame of {frame_bytes} bytes does not fit an empty segment; Options::validate should have refused this"
        );
        Ok(offset)
    }

    fn after_encode(&mut self) -> Result<(), StorageError> {
        if self.buf.len() as u64 >= self.options.write_buffer_bytes_max {
            match self.flush() {
                // The records stay buffered (the operation is done as far as the log's view
                // goes); the next flush, at the latest `begin_sync`'s, tries again and reports
                // the failure if the disk is still full.
                Err(e) if e.is_no_space() => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Appends entries, first removing any existing entries at or after `entries[0]`'s index
    /// (the suffix a new leader overwrote). Written, not synced: see [`Storage::sync`]. The
    /// entries are visible through [`LogView`] at once.
    ///
    /// Fails, writing nothing, with [`StorageError::EntryTooLarge`] if an entry's payload
    /// exceeds [`Options::entry_bytes_max`], and with [`StorageError::InvalidAppend`] if the
    /// batch does not fit the log: entries not consecutive, a gap after the last index, a start
    /// at or below the snapshot point, or a term lower than the entry before it. The consensus
    /// core never asks for those, but entries can come from a faulty peer, and storage is not
    /// the place for a node to crash on them.
    ///
    /// With [`StorageError::NoSpace`] (no room for the next segment) a prefix of the batch
    /// may have been taken: call `append` again with the same batch once space is freed.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.check_append(entries)?;
        if first.index() <= self.last_index() {
            self.truncate_suffix(first.index())?;
        }
        for e in entries {
            let frame_bytes = record::entry_frame_bytes(e.data.len());
            let offset = self.reserve(frame_bytes)?;
            record::encode_entry(&mut self.buf, e.id, e.kind, &e.data);
            self.slots.push_back(Slot {
                term: e.term(),
                seq: self.active().seq,
                offset: offset as u32,
                frame_bytes: frame_bytes as u32,
            });
            self.cache_push(e.clone());
            self.after_encode()?;
        }
        self.check_invariants();
        Ok(())
    }

    /// The checks of [`Storage::append`], before anything is written.
    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = &entries[0];
        let invalid = |reason: String| Err(StorageError::InvalidAppend { reason });
        if first.index() <= self.base.index {
            return invalid(format!(
                "append at {} overwrites the compacted prefix ending at {}",
                first.id, self.base
            ));
        }
        if first.index() > self.last_index().next() {
            return invalid(format!(
                "append at {} leaves a gap after the last index {}",
                first.id,
                self.last_index()
            ));
        }
        // The entry before the batch stays: it is at most the last index (checked above).
        let prev_term = self.term_of(first.index().prev());
        if first.term() < prev_term {
            return invalid(format!("append of {} after an entry of term {prev_term}", first.id));
        }
        for (i, e) in entries.iter().enumerate() {
            if e.index() != first.index().plus(i as u64) {
                return invalid(format!(
                    "entries to append are not consecutive: {} at position {i} of a batch \
                     starting at {}",
                    e.id, first.id
                ));
            }
            if i > 0 && e.term() < entries[i - 1].term() {
                return invalid(format!(
                    "terms go backwards in an append: {} after {}",
                    e.id,
                    entries[i - 1].id
                ));
            }
            if e.data.len() as u64 > self.options.entry_bytes_max {
                return Err(StorageError::EntryTooLarge {
                    id: e.id,
                    bytes: e.data.len() as u64,
                    limit: self.options.entry_bytes_max,
                });
            }
        }
        Ok(())
    }

    fn cache_push(&mut self, e: Entry) {
        self.cache_bytes += e.size_bytes();
        self.cache.push_back(e);
        while self.cache_bytes > self.options.cache_bytes_max {
            let old = self.cache.pop_front().expect("non-empty while over budget");
            self.cache_bytes -= old.size_bytes();
        }
    }

    /// Removes every entry at or after `from`. Written, not synced. Does nothing if `from` is
    /// past the last index.
    ///
    /// Fails with [`StorageError::InvalidAppend`], writing nothing, if `from` is at or below
    /// the snapshot point (compacted entries were applied and can never conflict).
    pub fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.check_usable()?;
        if from <= self.base.index {
            return Err(StorageError::InvalidAppend {
                reason: format!(
                    "truncation from {from} reaches into the compacted prefix ending at {}",
                    self.base
                ),
            });
        }
        if from > self.last_index() {
            return Ok(());
        }
        self.reserve(record::FRAME_OVERHEAD_BYTES + 9)?;
        record::encode_truncate(&mut self.buf, from);
        let keep = (from.0 - self.base.index.0 - 1) as usize;
        self.slots.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index() >= from) {
            let e = self.cache.pop_back().expect("checked");
            self.cache_bytes -= e.size_bytes();
        }
        self.after_encode()?;
        self.check_invariants();
        Ok(())
    }

    /// Removes every entry up to and including `upto`, which becomes the snapshot point (call
    /// it once a snapshot covering `upto` is durable). Written, not synced; segments wholly
    /// below the snapshot point are deleted by the first sync that makes it durable. Does
    /// nothing if `upto` is at or below the snapshot point.
    ///
    /// Fails with [`StorageError::InvalidRequest`], writing nothing, if `upto` is past the last
    /// index (use [`Storage::reset_to_snapshot`] for that).
    pub fn compact(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        self.check_usable()?;
        if upto <= self.base.index {
            return Ok(());
        }
        if upto > self.last_index() {
            return Err(StorageError::InvalidRequest {
                reason: format!("compaction to {upto} past the last index {}", self.last_index()),
            });
        }
        let id = EntryId::new(self.term_of(upto), upto);
        self.reserve(record::FRAME_OVERHEAD_BYTES + 17)?;
        record::encode_compact(&mut self.buf, id);
        let n = (upto.0 - self.base.index.0) as usize;
        self.slots.drain(..n);
        while self.cache.front().is_some_and(|e| e.index() <= upto) {
            let e = self.cache.pop_front().expect("checked");
            self.cache_bytes -= e.size_bytes();
        }
        self.base = id;
        self.after_encode()?;
        self.check_invariants();
        Ok(())
    }

    /// Replaces the whole log by an empty one that starts after a snapshot at `base` (a
    /// snapshot installed from the leader), with the snapshot's membership. Written, not
    /// synced.
    ///
    /// Fails with [`StorageError::InvalidRequest`], writing nothing, if `base` is below the
    /// current snapshot point.
    pub fn reset_to_snapshot(
        &mut self,
        base: EntryId,
        membership: Membership,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        if base.index < self.base.index {
            return Err(StorageError::InvalidRequest {
                reason: format!("reset to {base} before the snapshot point {}", self.base),
            });
        }
        self.check_membership_size(&membership)?;
        self.reserve(record::FRAME_OVERHEAD_BYTES + 17 + record::membership_bytes(&membership))?;
        record::encode_reset(&mut self.buf, base, &membership);
        self.slots.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.base = base;
        self.membership = membership;
        self.after_encode()?;
        self.check_invariants();
        Ok(())
    }

    /// Records a new hard state. Written, not synced. Writing the same hard state again writes
    /// nothing.
    ///
    /// Fails with [`StorageError::InvalidRequest`], writing nothing, if the term goes
    /// backwards (terms only grow, Raft §5.1).
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        if hard_state.term < self.hard_state.term {
            return Err(StorageError::InvalidRequest {
                reason: format!(
                    "hard state term goes back from {} to {}",
                    self.hard_state.term, hard_state.term
                ),
            });
        }
        if hard_state == self.hard_state {
            return Ok(());
        }
        // The entries of this Ready reach the file, the hard state does not.
        crate::failpoint!("log-before-hard-state", || {
            let _ = self.flush();
        });
        self.reserve(record::FRAME_OVERHEAD_BYTES + 26)?;
        record::encode_hard_state(&mut self.buf, &hard_state);
        self.hard_state = hard_state;
        self.after_encode()
    }

    fn check_membership_size(&self, m: &Membership) -> Result<(), StorageError> {
        let bytes = record::membership_bytes(m) as u64;
        if bytes > self.options.membership_bytes_max {
            return Err(StorageError::MembershipTooLarge {
                bytes,
                limit: self.options.membership_bytes_max,
            });
        }
        Ok(())
    }

    /// Records the configuration in force at the end of the log. Written, not synced.
    pub fn set_membership(&mut self, membership: Membership) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_membership_size(&membership)?;
        if membership == self.membership {
            return Ok(());
        }
        self.reserve(record::FRAME_OVERHEAD_BYTES + 1 + record::membership_bytes(&membership))?;
        record::encode_membership(&mut self.buf, &membership);
        self.membership = membership;
        self.after_encode()
    }

    /// Records that a snapshot file for `meta` is durable in this directory (written with
    /// [`Storage::snapshot_writer`]). It becomes what [`LogView::snapshot`] reports unless a
    /// newer one is already known. Compaction must not pass the newest snapshot.
    pub fn note_snapshot(&mut self, meta: SnapshotMeta) {
        let newer = self.snapshot.as_ref().is_none_or(|s| {
            (meta.last_included.index, meta.last_included.term)
                > (s.last_included.index, s.last_included.term)
        });
        if newer {
            self.snapshot = Some(meta);
        }
    }

    /// Makes every operation issued so far durable with one fsync, and releases segments that
    /// the now-durable snapshot point has made obsolete (the next sync deletes their files,
    /// see [`SyncTicket::wait`]). Returns the last index of the log.
    ///
    /// Equivalent to `finish_sync(begin_sync()?.wait())`.
    pub fn sync(&mut self) -> Result<LogIndex, StorageError> {
        let ticket = self.begin_sync()?;
        self.finish_sync(ticket.wait())
    }

    /// Writes everything buffered and returns a ticket whose [`SyncTicket::wait`] makes it
    /// durable. Operations issued after this call are not covered: they join the next sync.
    ///
    /// # Panics
    /// If a ticket is already out (one sync at a time).
    pub fn begin_sync(&mut self) -> Result<SyncTicket, StorageError> {
        self.check_usable()?;
        assert!(!self.sync_in_flight, "one sync at a time");
        self.flush()?;
        self.sync_in_flight = true;
        let active = self.active();
        Ok(SyncTicket {
            file: Arc::clone(&active.file),
            path: active.path.clone(),
            seq: active.seq,
            last_index: self.last_index(),
            base: self.base,
            disk: Arc::clone(&self.disk),
            dir: self.dir.clone(),
            sync_dir: std::mem::take(&mut self.names_unsynced),
            release: std::mem::take(&mut self.released),
            prepare_bytes: self.take_prepare_turn().then_some(self.options.segment_bytes_max),
            fsync_done: false,
        })
    }

    /// Completes a sync begun by [`Storage::begin_sync`]. On success returns the ticket's last
    /// index; every operation issued before `begin_sync` is durable. Takes back the segment
    /// file the ticket prepared, if any, and releases the segments the now-durable snapshot
    /// point has made obsolete (the next ticket deletes them). On failure (of the fsync or of
    /// the ticket's file work) the storage is poisoned: this and every later write returns an
    /// error.
    pub fn finish_sync(&mut self, done: FinishedSync) -> Result<LogIndex, StorageError> {
        assert!(self.sync_in_flight, "finish_sync without begin_sync");
        self.sync_in_flight = false;
        let FinishedSync { ticket, result, prepared, prepare_no_space } = done;
        if prepare_no_space.is_some() {
            self.no_space_count += 1;
            self.prepare_skip_syncs = PREPARE_SKIP_SYNCS_AFTER_NO_SPACE;
        }
        self.poison_on_error(result)?;
        self.check_usable()?;
        if let Some(file) = prepared {
            assert!(self.prepared.is_none(), "a ticket prepared a segment while one was ready");
            self.prepared = Some(file);
        }
        self.release_obsolete_segments(ticket.seq, ticket.base);
        Ok(ticket.last_index)
    }

    /// Whether the next sync ticket should prepare a segment file: none is ready, and no
    /// preparation failed for lack of space in the last
    /// [`PREPARE_SKIP_SYNCS_AFTER_NO_SPACE`] syncs (so that a full disk is not asked to
    /// allocate a whole segment after every fsync).
    fn take_prepare_turn(&mut self) -> bool {
        if self.prepared.is_some() {
            return false;
        }
        if self.prepare_skip_syncs > 0 {
            self.prepare_skip_syncs -= 1;
            return false;
        }
        true
    }

    /// How many times an operation found no space on the disk: writes, new segments, segment
    /// preparations (each [`StorageError::NoSpace`] returned or absorbed). For metrics.
    pub fn no_space_count(&self) -> u64 {
        self.no_space_count
    }

    /// Releases sealed segments older than `synced_seq` (whose header is durable) whose every
    /// live entry is at or below the durable snapshot point: they leave `segments` now, and
    /// the next sync ticket deletes their files, oldest first.
    fn release_obsolete_segments(&mut self, synced_seq: u64, durable_base: EntryId) {
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let obsolete = oldest.seq < synced_seq
                && oldest.sealed_last.is_some_and(|last| last <= durable_base.index);
            if !obsolete {
                break;
            }
            let oldest = self.segments.pop_front().expect("checked");
            self.released.push(oldest.path);
        }
    }

    /// Segment files released by compaction but not yet deleted (the next sync deletes them).
    pub fn released_segment_count(&self) -> usize {
        self.released.len()
    }

    /// Whether a prepared segment file is ready for the next rollover.
    pub fn has_prepared_segment(&self) -> bool {
        self.prepared.is_some()
    }

    /// The hard state last set (durable once synced).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The membership last set (durable once synced).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The snapshot point: the id of the entry just before the first.
    pub fn snapshot_point(&self) -> EntryId {
        self.base
    }

    /// The id of the last entry (the snapshot point when the log is empty).
    pub fn last_id(&self) -> EntryId {
        EntryId::new(self.term_of(self.last_index()), self.last_index())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The disk this storage lives on (for snapshot files in the same directory).
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// Number of segment files in use.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The term at `index`, which must be in `base.index..=last_index`.
    fn term_of(&self, index: LogIndex) -> Term {
        if index == self.base.index {
            return self.base.term;
        }
        self.slots[(index.0 - self.base.index.0 - 1) as usize].term
    }

    /// Invariants kept in release builds (cheap: no loops over the log).
    fn check_invariants(&self) {
        assert!(!self.segments.is_empty(), "no active segment");
        assert!(
            self.cache.len() <= self.slots.len(),
            "cache holds {} entries but the log {}",
            self.cache.len(),
            self.slots.len()
        );
        assert!(
            self.write_offset + self.buf.len() as u64 <= self.options.segment_bytes_max,
            "active segment overfull"
        );
        if let (Some(e), Some(s)) = (self.cache.back(), self.slots.back()) {
            assert_eq!(e.index(), self.last_index(), "cache does not end at the last index");
            assert_eq!(e.term(), s.term, "cache and index disagree on the last term");
        }
        assert!(self.active().sealed_last.is_none(), "the active segment is sealed");
    }

    /// Reads the frames of slots `[from, to)` (same segment, contiguous) and appends their
    /// entries to `out`.
    fn read_run(&self, from: usize, to: usize, out: &mut Vec<Entry>) -> Result<(), StorageError> {
        let first = self.slots[from];
        let seg = &self.segments[(first.seq - self.segments[0].seq) as usize];
        let start = u64::from(first.offset);
        let last = self.slots[to - 1];
        let end = u64::from(last.offset) + u64::from(last.frame_bytes);
        let read;
        let bytes: &[u8] = if seg.sealed_last.is_none() && start >= self.write_offset {
            let s = (start - self.write_offset) as usize;
            let e = (end - self.write_offset) as usize;
            &self.buf[s..e]
        } else {
            let mut v = vec![0u8; (end - start) as usize];
            seg.file.read_at(&mut v, start).map_err(|e| StorageError::io(&seg.path, e))?;
            read = v;
            &read
        };
        let mut pos = 0usize;
        for i in from..to {
            let slot = self.slots[i];
            let index = self.base.index.plus(i as u64 + 1);
            let offset = u64::from(slot.offset);
            let corrupt = |reason: String| StorageError::corrupt(&seg.path, offset, reason);
            let frame = record::decode_frame(&bytes[pos..pos + slot.frame_bytes as usize])
                .map_err(|e| corrupt(e.describe()))?;
            match record::decode_record(frame.body).map_err(corrupt)? {
                Record::Entry { id, kind, data } if id == EntryId::new(slot.term, index) => {
                    // Each entry gets an allocation of its own rather than a slice of the run:
                    // the state machine keeps values as slices of entries, which would
                    // otherwise keep the whole run alive.
                    out.push(Entry { id, kind, data: Bytes::copy_from_slice(data) });
                }
                other => {
                    return Err(corrupt(format!(
                        "expected entry {}/{index}, found {other:?}",
                        slot.term.0
                    )));
                }
            }
            pos += slot.frame_bytes as usize;
        }
        Ok(())
    }
}

impl LogView for Storage {
    fn initial_state(&self) -> InitialState {
        InitialState { hard_state: self.hard_state, membership: self.membership.clone() }
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot.clone()
    }

    fn first_index(&self) -> LogIndex {
        self.base.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.base.index.plus(self.slots.len() as u64)
    }

    fn term(&self, index: LogIndex) -> Result<Term, LogError> {
        if index < self.base.index {
            return Err(LogError::Compacted { index, first_index: self.first_index() });
        }
        if index > self.last_index() {
            return Err(LogError::Unavailable { index, last_index: self.last_index() });
        }
        Ok(self.term_of(index))
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        bytes_max: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError> {
        if lo <= self.base.index {
            return Err(LogError::Compacted { index: lo, first_index: self.first_index() });
        }
        if hi > self.last_index() {
            return Err(LogError::Unavailable { index: hi, last_index: self.last_index() });
        }
        if lo > hi {
            return Ok(());
        }
        let cache_start = self.last_index().0 + 1 - self.cache.len() as u64;
        let pos = |index: u64| (index - self.base.index.0 - 1) as usize;
        let mut bytes = 0u64;
        let mut count = 0usize;
        let mut i = lo.0;
        while i <= hi.0 {
            if i >= cache_start {
                let e = &self.cache[(i - cache_start) as usize];
                bytes += e.size_bytes();
                if bytes > bytes_max && count > 0 {
                    break;
                }
                out.push(e.clone());
                count += 1;
                if bytes >= bytes_max {
                    break;
                }
                i += 1;
                continue;
            }
            // A run of entries contiguous in one segment, read with one read.
            let from = pos(i);
            let mut to = from;
            let mut stop = false;
            while to < pos(hi.0) + 1 && self.base.index.0 + 1 + (to as u64) < cache_start {
                let s = self.slots[to];
                if to > from {
                    let p = self.slots[to - 1];
                    let contiguous = s.seq == p.seq && s.offset == p.offset + p.frame_bytes;
                    // Within the active segment a run is either all written or all still in
                    // the buffer.
                    let same_side = s.seq != self.active().seq
                        || (u64::from(s.offset) >= self.write_offset)
                            == (u64::from(p.offset) >= self.write_offset);
                    if !contiguous || !same_side {
                        break;
                    }
                }
                let size = s.data_bytes() + tenure_raft::types::ENTRY_OVERHEAD_BYTES;
                if bytes + size > bytes_max && count + (to - from) > 0 {
                    stop = true;
                    break;
                }
                bytes += size;
                to += 1;
                if bytes >= bytes_max {
                    stop = true;
                    break;
                }
            }
            if to > from {
                self.read_run(from, to, out).map_err(LogError::from)?;
            }
            count += to - from;
            i += (to - from) as u64;
            if stop {
                break;
            }
        }
        Ok(())
    }
}

impl Storage {
    /// The entries from `lo` through `hi` inclusive (a convenience over [`LogView::entries`]
    /// with no byte limit).
    pub fn read_entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        self.entries(lo, hi, u64::MAX, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_disk::SimDisk;
    use tenure_raft::{EntryKind, NodeId};

    fn small_options() -> Options {
        Options {
            segment_bytes_max: 4096,
            entry_bytes_max: 1024,
            membership_bytes_max: 256,
            write_buffer_bytes_max: 512,
            cache_bytes_max: 600,
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new(
            Term(term),
            LogIndex(index),
            Bytes::from(format!("entry-{index}-{}", "x".repeat((index % 50) as usize))),
        )
    }

    fn open(disk: &SimDisk) -> Storage {
        Storage::open(Arc::new(disk.clone()), "/data", small_options()).expect("open")
    }

    #[test]
    fn the_newest_snapshot_is_known_at_open_and_only_moves_forward() {
        let disk = SimDisk::new(7);
        let mut s = open(&disk);
        assert_eq!(s.snapshot(), None);
        let entries: Vec<Entry> = (1..=10).map(|i| entry(1, i)).collect();
        s.append(&entries).unwrap();
        let meta = |i: u64| SnapshotMeta {
            last_included: EntryId::new(Term(1), LogIndex(i)),
            membership: Membership::voters([tenure_raft::NodeId(1)]),
        };
        let mut w = s.snapshot_writer(meta(8)).unwrap();
        w.write_chunk(b"state at 8").unwrap();
        s.note_snapshot(w.finish().unwrap());
        s.note_snapshot(meta(5));
        assert_eq!(s.snapshot(), Some(meta(8)), "an older snapshot does not replace a newer one");
        s.compact(LogIndex(6)).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open(&disk);
        assert_eq!(s.snapshot(), Some(meta(8)), "found again at open");
        assert_eq!(s.first_index(), LogIndex(7));
    }

    #[test]
    fn entries_are_readable_before_and_after_sync_and_reopen_across_segments() {
        let disk = SimDisk::new(7);
        let mut s = open(&disk);
        let entries: Vec<Entry> = (1..=200).map(|i| entry(1 + i / 100, i)).collect();
        for chunk in entries.chunks(7) {
            s.append(chunk).unwrap();
        }
        assert_eq!(s.read_entries(LogIndex(1), LogIndex(200)).unwrap(), entries);
        s.sync().unwrap();
        assert!(s.segment_count() > 3, "small segments force rotation");
        assert_eq!(s.read_entries(LogIndex(1), LogIndex(200)).unwrap(), entries);
        drop(s);
        let s = open(&disk);
        assert_eq!(s.last_index(), LogIndex(200));
        assert_eq!(s.read_entries(LogIndex(1), LogIndex(200)).unwrap(), entries);
        assert_eq!(s.term(LogIndex(150)), Ok(Term(2)));
    }

    #[test]
    fn entries_still_in_the_write_buffer_are_readable_after_leaving_the_cache() {
        let disk = SimDisk::new(7);
        let options =
            Options { write_buffer_bytes_max: 4000, cache_bytes_max: 100, ..small_options() };
        let mut s = Storage::open(Arc::new(disk.clone()), "/data", options).unwrap();
        let entries: Vec<Entry> = (1..=30).map(|i| entry(1, i)).collect();
        s.append(&entries[..10]).unwrap();
        s.sync().unwrap();
        s.append(&entries[10..]).unwrap();
        assert!(s.cache.len() < 5, "most entries left the cache");
        assert!(!s.buf.is_empty(), "and some are only in the write buffer");
        assert_eq!(s.read_entries(LogIndex(1), LogIndex(30)).unwrap(), entries);
        let mut some = Vec::new();
        s.entries(LogIndex(8), LogIndex(14), u64::MAX, &mut some).unwrap();
        assert_eq!(some, entries[7..14].to_vec(), "a run across the written/buffered line");
    }

    #[test]
    fn entries_respect_the_byte_limit_like_memlog() {
        let disk = SimDisk::new(7);
        let mut s = open(&disk);
        let entries: Vec<Entry> = (1..=60).map(|i| entry(1, i)).collect();
        s.append(&entries).unwrap();
        let mut mem = tenure_raft::MemLog::new(Membership::default());
        mem.append(&entries);
        for limit in [1, 40, 100, 333, 1000, 5000] {
            for lo in [1u64, 5, 30] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                s.entries(LogIndex(lo), LogIndex(60), limit, &mut a).unwrap();
                mem.entries(LogIndex(lo), LogIndex(60), limit, &mut b).unwrap();
                assert_eq!(a, b, "limit {limit} from {lo}");
            }
        }
    }

    #[test]
    fn truncation_compaction_and_state_survive_reopen() {
        let disk = SimDisk::new(3);
        let mut s = open(&disk);
        s.append(&(1..=100).map(|i| entry(1, i)).collect::<Vec<_>>()).unwrap();
        s.append(&[entry(2, 90), entry(2, 91)]).unwrap();
        s.truncate_suffix(LogIndex(91)).unwrap();
        s.compact(LogIndex(70)).unwrap();
        let hs = HardState { term: Term(2), vote: Some(NodeId(3)), commit: LogIndex(80) };
        s.set_hard_state(hs).unwrap();
        let m = Membership::voters([NodeId(1), NodeId(2), NodeId(3)]);
        s.set_membership(m.clone()).unwrap();
        let before = s.segment_count();
        s.sync().unwrap();
        assert!(s.segment_count() < before, "compaction deletes old segments");
        drop(s);
        let s = open(&disk);
        assert_eq!(s.first_index(), LogIndex(71));
        assert_eq!(s.last_index(), LogIndex(90));
        assert_eq!(s.term(LogIndex(70)), Ok(Term(1)));
        assert_eq!(s.term(LogIndex(90)), Ok(Term(2)));
        assert!(matches!(s.term(LogIndex(69)), Err(LogError::Compacted { .. })));
        assert_eq!(s.initial_state().hard_state, hs);
        assert_eq!(s.initial_state().membership, m);
        assert_eq!(
            s.read_entries(LogIndex(71), LogIndex(89)).unwrap(),
            (71..=89).map(|i| entry(1, i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn reset_to_snapshot_empties_the_log_past_its_end() {
        let disk = SimDisk::new(3);
        let mut s = open(&disk);
        s.append(&(1..=10).map(|i| entry(1, i)).collect::<Vec<_>>()).unwrap();
        let m = Membership::voters([NodeId(9)]);
        s.reset_to_snapshot(EntryId::new(Term(4), LogIndex(500)), m.clone()).unwrap();
        s.append(&[entry(4, 501)]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open(&disk);
        assert_eq!(s.first_index(), LogIndex(501));
        assert_eq!(s.last_index(), LogIndex(501));
        assert_eq!(s.term(LogIndex(500)), Ok(Term(4)));
        assert_eq!(s.membership(), &m);
    }

    #[test]
    fn sync_ticket_runs_on_another_thread_while_appends_continue() {
        let disk = SimDisk::new(3);
        let mut s = open(&disk);
        s.append(&[entry(1, 1), entry(1, 2)]).unwrap();
        let ticket = s.begin_sync().unwrap();
        let handle = std::thread::spawn(move || ticket.wait());
        s.append(&[entry(1, 3)]).unwrap();
        let done = handle.join().unwrap();
        assert_eq!(s.finish_sync(done).unwrap(), LogIndex(2));
        drop(s);
        disk.crash(crate::CrashMode::LoseUnsynced);
        let s = open(&disk);
        assert_eq!(s.last_index(), LogIndex(2), "entry 3 joined the next sync, which never ran");
    }

    #[test]
    fn storage_and_sync_ticket_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Storage>();
        send::<SyncTicket>();
        send::<FinishedSync>();
    }

    #[test]
    fn oversized_membership_is_refused_without_writing() {
        let disk = SimDisk::new(3);
        let mut s = open(&disk);
        let m = Membership::voters((0..100).map(NodeId));
        assert!(matches!(s.set_membership(m), Err(StorageError::MembershipTooLarge { .. })));
        assert_eq!(s.membership(), &Membership::default());
    }

    #[test]
    fn options_validate_rejects_entries_that_cannot_fit() {
        let mut o = small_options();
        assert!(o.validate().is_ok());
        o.entry_bytes_max = 4096;
        assert!(matches!(o.validate(), Err(StorageError::InvalidOptions { .. })));
        o = small_options();
        o.segment_bytes_max = 100;
        assert!(o.validate().is_err());
        assert!(Options::default().validate().is_ok());
    }

    #[test]
    fn too_large_entry_is_refused_without_writing() {
        let disk = SimDisk::new(3);
        let mut s = open(&disk);
        let big = Entry::new(Term(1), LogIndex(1), Bytes::from(vec![1u8; 2000]));
        assert!(matches!(s.append(&[big]), Err(StorageError::EntryTooLarge { .. })));
        assert_eq!(s.last_index(), LogIndex(0));
        s.append(&[entry(1, 1)]).unwrap();
    }

    /// A log of entries 1..=10 (term 1 up to 5, term 2 after), compacted to 3, synced; then
    /// `bad` must be refused with an error `is_expected` accepts, write nothing, and leave the
    /// storage usable.
    fn refused_without_writing(
        bad: impl FnOnce(&mut Storage) -> Result<(), StorageError>,
        is_expected: impl FnOnce(&StorageError) -> bool,
    ) {
        let disk = SimDisk::new(5);
        let mut s = open(&disk);
        let log: Vec<Entry> = (1..=10).map(|i| entry(if i <= 5 { 1 } else { 2 }, i)).collect();
        s.append(&log).unwrap();
        s.set_hard_state(HardState { term: Term(2), vote: None, commit: LogIndex(4) }).unwrap();
        s.compact(LogIndex(3)).unwrap();
        s.sync().unwrap();
        let ops = disk.op_count();
        let err = bad(&mut s).expect_err("the request must be refused");
        assert!(is_expected(&err), "unexpected error: {err}");
        assert_eq!(disk.op_count(), ops, "nothing reached the disk");
        assert!(s.buf.is_empty(), "nothing was buffered");
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(4), LogIndex(10)));
        assert_eq!(s.read_entries(LogIndex(4), LogIndex(10)).unwrap(), log[3..].to_vec());
        assert_eq!(s.hard_state().term, Term(2));
        // Still usable: a refusal does not poison the storage.
        s.append(&[entry(2, 11)]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open(&disk);
        assert_eq!(s.last_index(), LogIndex(11));
    }

    fn invalid_append(e: &StorageError) -> bool {
        matches!(e, StorageError::InvalidAppend { .. })
    }

    fn invalid_request(e: &StorageError) -> bool {
        matches!(e, StorageError::InvalidRequest { .. })
    }

    #[test]
    fn append_into_the_compacted_prefix_is_refused() {
        refused_without_writing(|s| s.append(&[entry(1, 3), entry(1, 4)]), invalid_append);
    }

    #[test]
    fn append_leaving_a_gap_after_the_last_index_is_refused() {
        refused_without_writing(|s| s.append(&[entry(2, 12)]), invalid_append);
    }

    #[test]
    fn append_of_entries_that_are_not_consecutive_is_refused() {
        refused_without_writing(
            |s| s.append(&[entry(2, 11), entry(2, 12), entry(2, 14)]),
            invalid_append,
        );
        // Not consecutive also when overwriting: nothing may be truncated either.
        refused_without_writing(|s| s.append(&[entry(3, 8), entry(3, 8)]), invalid_append);
    }

    #[test]
    fn append_whose_terms_go_backwards_is_refused() {
        refused_without_writing(
            |s| s.append(&[entry(3, 11), entry(2, 12)]),
            |e| invalid_append(e) && e.to_string().contains("terms go backwards"),
        );
    }

    #[test]
    fn append_with_a_term_below_the_entry_before_it_is_refused() {
        // Entry 7 has term 2: an overwrite from 8 with term 1 would break the log's order.
        refused_without_writing(|s| s.append(&[entry(1, 8)]), invalid_append);
        refused_without_writing(|s| s.append(&[entry(1, 11)]), invalid_append);
    }

    #[test]
    fn truncation_into_the_compacted_prefix_is_refused() {
        refused_without_writing(|s| s.truncate_suffix(LogIndex(3)), invalid_append);
    }

    #[test]
    fn compaction_past_the_last_index_is_refused() {
        refused_without_writing(|s| s.compact(LogIndex(11)), invalid_request);
    }

    #[test]
    fn reset_below_the_snapshot_point_is_refused() {
        refused_without_writing(
            |s| s.reset_to_snapshot(EntryId::new(Term(1), LogIndex(2)), Membership::default()),
            invalid_request,
        );
    }

    #[test]
    fn hard_state_whose_term_goes_backwards_is_refused() {
        refused_without_writing(
            |s| s.set_hard_state(HardState { term: Term(1), vote: None, commit: LogIndex(4) }),
            invalid_request,
        );
    }

    fn prepared_path() -> PathBuf {
        Path::new("/data").join(PREPARED_SEGMENT_NAME)
    }

    /// Appends entries of term 1 from `next` until the active segment rolls over.
    fn append_until_rollover(s: &mut Storage, next: &mut u64) {
        let segments = s.segment_count();
        while s.segment_count() == segments {
            s.append(&[entry(1, *next)]).unwrap();
            *next += 1;
        }
    }

    #[test]
    fn a_sync_prepares_the_next_segment_and_a_rollover_renames_it_into_place() {
        let disk = SimDisk::new(11);
        let mut s = open(&disk);
        assert!(!s.has_prepared_segment(), "nothing prepared before the first sync");
        s.append(&[entry(1, 1)]).unwrap();
        s.sync().unwrap();
        assert!(s.has_prepared_segment());
        let prepared = disk.read_raw(&prepared_path()).expect("the prepared file exists");
        assert_eq!(prepared.len() as u64, small_options().segment_bytes_max, "preallocated");
        assert!(all_zero(&prepared));
        let mut next = 2;
        let ops = disk.op_count();
        append_until_rollover(&mut s, &mut next);
        // Flushes of the write buffer, the sealing fsync, the rename: no file creation, no
        // allocation, no fsync of the new file or of the directory.
        let rollover_ops = disk.op_count() - ops;
        assert!(!s.has_prepared_segment());
        assert_eq!(disk.read_raw(&prepared_path()), None, "renamed into place");
        assert!(disk.read_raw(Path::new("/data/0000000000000002.wal")).is_some());
        let fallback = {
            let disk = SimDisk::new(11);
            let mut s = open(&disk);
            let mut next = 1;
            let ops = disk.op_count();
            append_until_rollover(&mut s, &mut next);
            disk.op_count() - ops
        };
        assert!(
            rollover_ops + 2 < fallback,
            "the prepared rollover needs fewer disk operations ({rollover_ops} against {fallback})"
        );
        // The next sync makes the renamed segment's name durable with its data.
        s.sync().unwrap();
        let last = s.last_index();
        drop(s);
        disk.crash(crate::CrashMode::LoseUnsynced);
        let s = open(&disk);
        assert_eq!(s.last_index(), last);
        assert_eq!(s.segment_count(), 2);
    }

    #[test]
    fn a_rollover_without_a_prepared_segment_creates_one_inline() {
        let disk = SimDisk::new(12);
        let mut s = open(&disk);
        let mut next = 1;
        for _ in 0..3 {
            append_until_rollover(&mut s, &mut next);
        }
        assert!(!s.has_prepared_segment());
        s.sync().unwrap();
        drop(s);
        disk.crash(crate::CrashMode::LoseUnsynced);
        let s = open(&disk);
        assert_eq!(s.last_index(), LogIndex(next - 1));
        assert_eq!(s.segment_count(), 4);
    }

    #[test]
    fn a_leftover_prepared_segment_is_removed_at_open() {
        let disk = SimDisk::new(13);
        let mut s = open(&disk);
        s.append(&[entry(1, 1), entry(1, 2)]).unwrap();
        s.sync().unwrap();
        assert!(s.has_prepared_segment());
        drop(s);
        // Make the prepared file's name durable, as a later directory sync would.
        Disk::sync_dir(&disk, Path::new("/data")).unwrap();
        disk.crash(crate::CrashMode::LoseUnsynced);
        assert!(disk.read_raw(&prepared_path()).is_some(), "the leftover survived the crash");
        let mut s = open(&disk);
        assert_eq!(disk.read_raw(&prepared_path()), None, "removed at open");
        assert_eq!(s.last_index(), LogIndex(2));
        assert!(!s.has_prepared_segment(), "never reused: its state is unknown");
        // And a leftover holding data (renamed into place, then the rename lost) is no segment.
        s.append(&[entry(1, 3)]).unwrap();
        s.sync().unwrap();
        disk.write_raw(&prepared_path(), 0, b"not a segment");
        Disk::sync_dir(&disk, Path::new("/data")).unwrap();
        drop(s);
        disk.crash(crate::CrashMode::LoseUnsynced);
        let s = open(&disk);
        assert_eq!(s.last_index(), LogIndex(3));
        assert_eq!(disk.read_raw(&prepared_path()), None);
    }

    #[test]
    fn compacted_segments_whose_deletion_never_happened_are_tolerated_and_deleted_later() {
        let disk = SimDisk::new(14);
        let mut s = open(&disk);
        let mut next = 1;
        for _ in 0..4 {
            append_until_rollover(&mut s, &mut next);
        }
        s.sync().unwrap();
        let wal_count = |disk: &SimDisk| {
            disk.paths().iter().filter(|p| p.extension().is_some_and(|e| e == "wal")).count()
        };
        assert_eq!(wal_count(&disk), 5);
        s.compact(LogIndex(next - 2)).unwrap();
        s.sync().unwrap();
        assert_eq!(s.segment_count(), 1, "the sync released the old segments");
        assert_eq!(s.released_segment_count(), 4);
        assert_eq!(wal_count(&disk), 5, "their files wait for the next sync");
        drop(s);
        disk.crash(crate::CrashMode::LoseUnsynced);
        let mut s = open(&disk);
        assert_eq!(s.first_index(), LogIndex(next - 1));
        assert_eq!(s.last_index(), LogIndex(next - 1));
        assert_eq!(s.read_entries(LogIndex(next - 1), LogIndex(next - 1)).unwrap().len(), 1);
        // The recovered storage finds them obsolete again; two syncs release and delete them.
        s.sync().unwrap();
        s.sync().unwrap();
        assert_eq!(s.released_segment_count(), 0);
        assert_eq!(wal_count(&disk), 1);
        drop(s);
        let s = open(&disk);
        assert_eq!(s.first_index(), LogIndex(next - 1));
    }

    #[test]
    fn a_failed_preparation_poisons_the_storage_like_any_failed_sync() {
        let disk = SimDisk::new(15);
        let mut s = open(&disk);
        s.append(&[entry(1, 1)]).unwrap();
        // The data fsync succeeds, the preparation's fsync fails.
        disk.fail_sync_after(1);
        assert!(matches!(s.sync(), Err(StorageError::SyncFailed { .. })));
        assert!(matches!(s.append(&[entry(1, 2)]), Err(StorageError::Poisoned { .. })));
        drop(s);
        disk.crash(crate::CrashMode::LoseUnsynced);
        let s = open(&disk);
        assert_eq!(s.last_index(), LogIndex(1), "the entry was durable before the failure");
    }

    #[test]
    fn entry_kinds_round_trip() {
        let disk = SimDisk::new(3);
        let mut s = open(&disk);
        let mut e = entry(1, 1);
        e.kind = EntryKind::Noop;
        e.data = Bytes::new();
        let mut c = entry(1, 2);
        c.kind = EntryKind::Config;
        s.append(&[e.clone(), c.clone()]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open(&disk);
        assert_eq!(s.read_entries(LogIndex(1), LogIndex(2)).unwrap(), vec![e, c]);
    }
}
