//! The disk seam: the handful of file operations the storage needs, as a trait, so that the
//! production runtime and the simulator run the same storage code.
//!
//! [`RealDisk`] is the real filesystem; [`crate::SimDisk`] is an in-memory disk that injects
//! faults. Paths are plain [`Path`]s; a disk decides what they mean (the simulator never touches
//! the real filesystem).

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory tree of files.
///
/// Durability model (what the storage assumes, and what [`crate::SimDisk`] enforces): a write
/// is durable only after [`DiskFile::sync`] of its file returns `Ok`; a created, renamed or
/// removed name is durable only after [`Disk::sync_dir`] of its parent returns `Ok`. After a
/// failed sync nothing may be assumed about what reached the disk.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it (empty) if `create` is set and it does
    /// not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// The names of the files directly in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir` for as long as the returned guard lives. Fails with
    /// [`io::ErrorKind::WouldBlock`] if someone else holds it.
    fn lock(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// An open file. Offsets are absolute (positional I/O), so one handle can be shared between a
/// writer and a thread that syncs.
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; fails with [`io::ErrorKind::UnexpectedEof`] past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
    /// Sets the length: truncates, or extends with zeros (preallocation).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write to this file so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Reserves disk space for the first `len` bytes (never shrinks the file): afterwards the
    /// file is at least `len` bytes long, reads of the new part return zeros, and writes into
    /// it cannot fail for want of space. Durable like a write: after [`DiskFile::sync`].
    ///
    /// The default extends the length with [`DiskFile::set_len`], which on most filesystems
    /// makes a sparse file (no space reserved); [`RealDisk`] uses `fallocate` on Linux.
    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.size_bytes()? < len { self.set_len(len) } else { Ok(()) }
    }
}

/// Holds a directory lock; dropping it releases the lock.
pub trait DirLock: Send + fmt::Debug {}

/// The real filesystem, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile {
    file: fs::File,
}

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn allocate(&self, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        // No flags: allocate blocks and extend the size; never shrinks, keeps existing data.
        match fallocate(&self.file, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // The filesystem cannot preallocate: a sparse extension is the best it offers.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                if self.size_bytes()? < len {
                    self.file.set_len(len)?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The lock file and its `flock`; the OS releases it when the file is closed or the process
/// dies, so a crashed node never leaves a stale lock behind.
#[derive(Debug)]
struct RealLock {
    _file: fs::File,
}

impl DirLock for RealLock {}

/// Name of the lock file inside a data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let path: PathBuf = dir.join(LOCK_FILE_NAME);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(RealLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held by another process"))
            }
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
