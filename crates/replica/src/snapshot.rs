//! Snapshots of the state machine: producing one in the background, streaming one to and from
//! a storage snapshot file, and the policy that decides when to take one.
//!
//! ```text
//!  replica thread                       any thread                     replica thread
//!  take_snapshot_job():                 SnapshotJob::run():            finish_snapshot():
//!    clone the store at `applied` ──>     kv.write_snapshot ──>          note it in storage,
//!    (O(1): nothing is copied)            storage snapshot file           compact the log to
//!                                         (chunked, fsynced, renamed)     index - catchup window
//! ```
//!
//! The apply loop stops only for the clone of the store, which is O(1): the key index and the
//! lease key sets are persistent maps whose nodes the copy shares (a write after the clone
//! copies only the nodes on its path), and values are reference-counted [`bytes::Bytes`].
//! Encoding, writing and the fsync run wherever the caller runs the job.

use std::io::{self, Read, Write};

use tenure_kv::{SnapshotError, Store};
use tenure_raft::SnapshotMeta;
use tenure_storage::{SnapshotReader, SnapshotWriter, StorageError};

/// Chunks of a snapshot file are cut at this size when the state machine writes them.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// When to take a snapshot and how much log to keep behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Take a snapshot once this many entries were applied since the last one (etcd's
    /// `--snapshot-count`). 0 disables the entry trigger.
    pub entries: u64,
    /// Take a snapshot once entries carrying this many bytes were applied since the last one.
    /// 0 disables the byte trigger.
    pub bytes: u64,
    /// Entries kept in the log behind a snapshot, so that a follower that is only slightly
    /// behind is served from the log rather than sent a snapshot (etcd's
    /// `--snapshot-catchup-entries`).
    pub catchup_entries: u64,
}

impl Default for SnapshotPolicy {
    /// etcd 3.4's defaults: a snapshot every 100,000 entries, 5,000 entries kept; plus one
    /// every 1 GiB applied.
    fn default() -> SnapshotPolicy {
        SnapshotPolicy { entries: 100_000, bytes: 1 << 30, catchup_entries: 5_000 }
    }
}

impl SnapshotPolicy {
    /// Never snapshot (the log grows without bound).
    pub fn disabled() -> SnapshotPolicy {
        SnapshotPolicy { entries: 0, bytes: 0, catchup_entries: 0 }
    }

    /// Whether a snapshot is due after `entries` entries and `bytes` bytes applied since the
    /// last one.
    pub fn due(&self, entries: u64, bytes: u64) -> bool {
        (self.entries > 0 && entries >= self.entries) || (self.bytes > 0 && bytes >= self.bytes)
    }
}

/// A snapshot to write: a point-in-time copy of the state machine and the file to write it
/// to. `Send`: run it on any thread, then hand the result to
/// [`crate::Replica::finish_snapshot`].
#[must_use = "a snapshot job must be run and its result passed to Replica::finish_snapshot"]
pub struct SnapshotJob {
    pub(crate) store: Store,
    pub(crate) writer: SnapshotWriter,
    pub(crate) meta: SnapshotMeta,
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotJob").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// The outcome of [`SnapshotJob::run`].
#[derive(Debug)]
pub struct SnapshotDone {
    pub(crate) result: Result<(SnapshotMeta, u64), StorageError>,
}

impl SnapshotJob {
    /// What the snapshot covers.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Encodes the state machine into the snapshot file, fsyncs it and moves it into place.
    /// Memory use beyond the copy of the store is one chunk.
    pub fn run(self) -> SnapshotDone {
        let SnapshotJob { store, writer, meta } = self;
        let mut out = ChunkWriter::new(writer);
        let result = match store.write_snapshot(&mut out) {
            Ok(bytes) => out.finish().map(|m| {
                debug_assert_eq!(m, meta);
                (m, bytes)
            }),
            Err(e) => Err(out.take_error().unwrap_or_else(|| snapshot_io(&meta, e))),
        };
        SnapshotDone { result }
    }
}

fn snapshot_io(meta: &SnapshotMeta, e: SnapshotError) -> StorageError {
    StorageError::Io {
        file: format!("snapshot {}", meta.last_included).into(),
        source: io::Error::other(e.to_string()),
    }
}

/// Adapts a [`SnapshotWriter`] to [`Write`], cutting chunks of [`SNAPSHOT_CHUNK_BYTES`].
pub struct ChunkWriter {
    writer: SnapshotWriter,
    buf: Vec<u8>,
    error: Option<StorageError>,
}

impl ChunkWriter {
    /// Wraps `writer`.
    pub fn new(writer: SnapshotWriter) -> ChunkWriter {
        ChunkWriter { writer, buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES), error: None }
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.writer.write_chunk(&self.buf) {
            let msg = e.to_string();
            self.error = Some(e);
            return Err(io::Error::other(msg));
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and seals the file (see [`SnapshotWriter::finish`]).
    pub fn finish(mut self) -> Result<SnapshotMeta, StorageError> {
        if self.flush_chunk().is_err() {
            return Err(self.error.take().expect("set on failure"));
        }
        self.writer.finish()
    }

    fn take_error(&mut self) -> Option<StorageError> {
        self.error.take()
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Adapts a [`SnapshotReader`] to [`Read`]: checked chunk by chunk, one chunk in memory.
pub struct ChunkReader {
    reader: SnapshotReader,
    chunk: bytes::Bytes,
    pos: usize,
    /// The storage error behind an `io::Error` returned from `read`, if any.
    pub error: Option<StorageError>,
}

impl ChunkReader {
    /// Wraps `reader`.
    pub fn new(reader: SnapshotReader) -> ChunkReader {
        ChunkReader { reader, chunk: bytes::Bytes::new(), pos: 0, error: None }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.reader.next_chunk() {
                Ok(Some(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
