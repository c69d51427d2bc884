//! # tenure-storage: durable state of one Raft node
//!
//! A segmented write-ahead log for the Raft entries, the hard state (term, vote, commit) and the
//! cluster membership, plus atomic, checksummed snapshot files, all on a [`Disk`] seam so that
//! the production runtime and the simulator run the same code.
//!
//! ## Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`log`] | [`Storage`]: open and recover, append, truncate, compact, hard state, membership, group-commit sync; implements [`tenure_raft::LogView`] |
//! | [`record`] | the on-disk frame (length, CRC-32C, end marker) and record encodings; a decoder that never panics |
//! | [`snapshot`] | [`SnapshotWriter`] / [`SnapshotReader`]: streamed, checksummed, atomically installed snapshot files |
//! | [`disk`] | the [`Disk`] / [`DiskFile`] traits (including `allocate`, real preallocation) and [`RealDisk`] (the filesystem; `fallocate` on Linux) |
//! | [`sim_disk`] | [`SimDisk`]: in-memory, seeded, fault-injecting disk (lost unsynced writes, torn writes, bit flips, failed fsyncs and reads) |
//! | [`error`] | [`StorageError`] |
//! | `failpoints` | (feature `failpoints` only) crash points for the fault suite, armed by `FAILPOINTS` |
//!
//! ## Contract
//!
//! - **Durability.** After [`Storage::sync`] returns `Ok`, every operation issued before it
//!   survives any crash. After a crash, the state recovered is that of *some prefix* of the
//!   operations issued, containing at least everything synced (see [`log`] for the details).
//! - **Corruption stops the node.** Damage other than a torn tail is reported as
//!   [`StorageError::Corrupt`] with the file and byte offset; it is never skipped and never a
//!   panic. A torn tail is cut off with a `tracing` warning.
//! - **Failed fsyncs are fatal.** After one, the storage refuses further writes and never
//!   retries the fsync.
//! - **A full disk is not fatal.** A write, allocation or file creation that fails with
//!   `ENOSPC` or `EDQUOT` is [`StorageError::NoSpace`] ([`StorageError::is_no_space`]): the
//!   storage stays usable and the operation can be retried once space is freed; a snapshot
//!   that did not fit removes its temporary file. See "A full disk" in [`log`].
//! - **One process per directory.** [`Storage::open`] takes an exclusive lock on the data
//!   directory and fails with [`StorageError::Locked`] if it is taken.
//! - **Bad input is an error, not a panic.** A request that does not fit the log (a gap in
//!   appended entries, a term going backwards, a compaction past the end) is refused with
//!   [`StorageError::InvalidAppend`] or [`StorageError::InvalidRequest`] and changes nothing:
//!   entries may come from a faulty peer, and storage must not be where a node crashes on
//!   them. Storage's own invariants are asserted (in release builds too) and panic when
//!   broken, and so does misuse of the sync protocol (two tickets at once).
//! - **The core only reads.** [`tenure_raft::LogView`] for [`Storage`] shows every operation at
//!   once, synced or not; the replica loop tells the core what is durable.

#![warn(missing_docs)]

pub mod disk;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod log;
pub mod record;
pub mod sim_disk;
pub mod snapshot;

/// A crash point of the fault suite (module `failpoints`, feature `failpoints`):
/// `failpoint!("name")`, or `failpoint!("name", || ...)` to run something just before the
/// crash. Expands to nothing unless the crate that uses it has its `failpoints` feature on
/// (which must turn on tenure-storage's).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoints::hit($name, || {});
    };
    ($name:literal, $before_crash:expr) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoints::hit($name, $before_crash);
    };
}

pub use disk::{DirLock, Disk, DiskFile, RealDisk};
pub use error::{StorageError, is_no_space};
pub use log::{FinishedSync, Options, Storage, SyncTicket};
pub use sim_disk::{CrashMode, SimDisk};
pub use snapshot::{SnapshotMeta, SnapshotReader, SnapshotWriter};

impl Storage {
    /// Starts a snapshot in this storage's directory (see [`SnapshotWriter`]). The writer
    /// does not borrow the storage, so it can run on another thread.
    pub fn snapshot_writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, StorageError> {
        SnapshotWriter::create(std::sync::Arc::clone(self.disk()), self.dir(), meta)
    }

    /// Opens the newest snapshot in this storage's directory, if any.
    pub fn latest_snapshot(&self) -> Result<Option<SnapshotReader>, StorageError> {
        SnapshotReader::open_latest(&**self.disk(), self.dir())
    }

    /// Opens the snapshot whose last included entry is `id`.
    pub fn open_snapshot(&self, id: tenure_raft::EntryId) -> Result<SnapshotReader, StorageError> {
        SnapshotReader::open(&**self.disk(), self.dir(), id)
    }
}
