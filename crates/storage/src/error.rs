//! The one error type of the crate.
//!
//! Every variant that comes from the disk names the file (and, for corruption, the byte offset)
//! so that an operator can find the damage. Corruption is never skipped: it stops the node.

use std::io;
use std::path::PathBuf;

use tenure_raft::{EntryId, LogError};

/// Why a storage operation failed.
///
/// [`StorageError::InvalidOptions`], [`StorageError::EntryTooLarge`],
/// [`StorageError::MembershipTooLarge`], [`StorageError::InvalidAppend`] and
/// [`StorageError::InvalidRequest`] reject a request and change nothing (the storage stays
/// usable). [`StorageError::NoSpace`] (the disk or the user's quota is full) leaves the storage
/// usable too: the operation can be retried once space is freed (see each operation for what a
/// failed call left behind). Every other variant
/// is fatal for the node: after a failed write or sync the storage refuses further writes (see
/// [`crate::Storage::sync`]), and corruption found by [`crate::Storage::open`] must be repaired
/// by an operator.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data on disk is damaged or inconsistent (bad checksum before the tail, a gap, a term
    /// going backwards, a segment out of sequence). The node must stop; an operator decides
    /// whether to rebuild this replica from the others.
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record in `file`.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A write, allocation or file creation failed because the filesystem is full (`ENOSPC`)
    /// or the user's disk quota is used up (`EDQUOT`). Not fatal, unlike [`StorageError::Io`]:
    /// nothing was lost, the storage stays usable, and the same operation succeeds once space is
    /// freed. A failed fsync is never this variant, whatever its error code, since after it the
    /// kernel may have dropped the dirty pages ([`StorageError::SyncFailed`]).
    #[error("no space left for {}: {source}", file.display())]
    NoSpace {
        /// The file or directory being written.
        file: PathBuf,
        /// The underlying error (`ENOSPC` or `EDQUOT`).
        #[source]
        source: io::Error,
    },
    /// An I/O operation other than a sync failed.
    #[error("I/O error on {}: {source}", file.display())]
    Io {
        /// The file or directory being accessed.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An fsync failed. What reached the disk is unknown (the kernel may have dropped the dirty
    /// pages), so the storage never retries it and refuses every later write.
    #[error("sync of {} failed: {source}; the storage refuses further writes", file.display())]
    SyncFailed {
        /// The file or directory whose sync failed.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `Storage` in this process) holds the directory lock.
    #[error("data directory {} is locked by another process", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// An earlier write or sync failed; the storage is read-only until the process restarts
    /// and recovery runs.
    #[error("storage refuses writes after an earlier failure: {reason}")]
    Poisoned {
        /// The first failure, as text.
        reason: String,
    },
    /// [`crate::Options::validate`] rejected the options.
    #[error("invalid storage options: {reason}")]
    InvalidOptions {
        /// Which limit is wrong and why.
        reason: String,
    },
    /// A membership is larger than `Options::membership_bytes_max`; nothing was written.
    #[error("membership of {bytes} encoded bytes is more than the limit of {limit} bytes")]
    MembershipTooLarge {
        /// Its encoded size.
        bytes: u64,
        /// `Options::membership_bytes_max`.
        limit: u64,
    },
    /// A batch of entries (or a truncation) that does not fit the log: not consecutive, a gap
    /// after the last index, a start at or below the snapshot point, or a term lower than the
    /// entry before it. Nothing was written.
    #[error("invalid append: {reason}")]
    InvalidAppend {
        /// Which rule the batch breaks, with the entries concerned.
        reason: String,
    },
    /// A compaction, reset or hard state that does not fit the log: a compaction past the last
    /// index, a reset below the snapshot point, a hard state whose term goes backwards. Nothing
    /// was written.
    #[error("invalid storage request: {reason}")]
    InvalidRequest {
        /// Which rule the request breaks.
        reason: String,
    },
    /// An entry is larger than the configured limit; nothing was written.
    #[error("entry {id} is {bytes} bytes, more than the limit of {limit} bytes")]
    EntryTooLarge {
        /// The entry.
        id: EntryId,
        /// Its encoded size.
        bytes: u64,
        /// `Options::entry_bytes_max`.
        limit: u64,
    },
}

impl StorageError {
    /// Wraps an I/O error on `file`: [`StorageError::NoSpace`] if it says the disk or the
    /// quota is full, [`StorageError::Io`] otherwise.
    pub(crate) fn io(file: impl Into<PathBuf>, source: io::Error) -> StorageError {
        if is_no_space(&source) {
            StorageError::NoSpace { file: file.into(), source }
        } else {
            StorageError::Io { file: file.into(), source }
        }
    }

    /// Whether this is [`StorageError::NoSpace`]: the operation may be retried once space is
    /// freed, and the storage is still usable.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::NoSpace { .. })
    }

    /// A corruption error.
    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StorageError {
        StorageError::Corrupt { file: file.into(), offset, reason: reason.into() }
    }
}

/// `ENOSPC` on Linux and most Unixes.
const ENOSPC: i32 = 28;
/// `EDQUOT` on Linux (it differs elsewhere: 69 on the BSDs and macOS).
#[cfg(target_os = "linux")]
const EDQUOT: i32 = 122;
#[cfg(not(target_os = "linux"))]
const EDQUOT: i32 = 69;

/// Whether an I/O error says the filesystem is full (`ENOSPC`) or the user's quota is used up
/// (`EDQUOT`), by its OS code or its kind (a disk that is not a real one, such as
/// [`crate::SimDisk`], may report either).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
        || matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl From<StorageError> for LogError {
    fn from(e: StorageError) -> LogError {
        LogError::Storage(e.to_string())
    }
}
