//! Snapshot files: written atomically, checksummed, streamed in chunks so that a snapshot never
//! has to fit in memory.
//!
//! A snapshot lives in the data directory as `{index:016x}-{term:016x}.snap`:
//!
//! ```text
//! "TNSNAP01"                                 magic and format version
//! meta_len u32, meta_crc u32, meta           last included term, index; membership
//! { len u32 (> 0), crc u32, len bytes }*     the data, in the writer's chunks
//! 0u32, total_crc u32                        end: CRC-32C of all the data, in order
//! ```
//!
//! [`SnapshotWriter`] writes to `<name>.tmp`, then on [`SnapshotWriter::finish`] fsyncs it,
//! renames it into place and fsyncs the directory, so a crash leaves either the old snapshot or
//! the new one, never half of one (leftover `.tmp` files are removed by
//! [`crate::Storage::open`]). It then deletes older snapshots (never newer ones). [`SnapshotReader`] checks every
//! chunk as it yields it and the whole at the end; damage is a [`StorageError::Corrupt`] naming
//! the file and offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tenure_raft::{EntryId, LogIndex, Term};

use crate::disk::{Disk, DiskFile};
use crate::error::StorageError;
use crate::record::{self, Reader};

const MAGIC: &[u8; 8] = b"TNSNAP01";
static NEXT_TEMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Largest chunk a reader accepts (and a writer writes: larger chunks are split).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 16 << 20;
const META_BYTES_MAX: usize = 1 << 20;
/// Suffix of snapshot files.
pub const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of files being written; removed at open.
pub const TEMP_SUFFIX: &str = ".tmp";

pub use tenure_raft::SnapshotMeta;

fn snapshot_name(id: EntryId) -> String {
    format!("{:016x}-{:016x}{SNAPSHOT_SUFFIX}", id.index.0, id.term.0)
}

fn parse_snapshot_name(name: &str) -> Option<EntryId> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some(EntryId::new(
        Term(u64::from_str_radix(term, 16).ok()?),
        LogIndex(u64::from_str_radix(index, 16).ok()?),
    ))
}

/// The snapshot files in `dir`, oldest (lowest index) first.
fn list_snapshots(disk: &dyn Disk, dir: &Path) -> Result<Vec<(EntryId, String)>, StorageError> {
    let names = disk.list(dir).map_err(|e| StorageError::io(dir, e))?;
    let mut snaps: Vec<(EntryId, String)> =
        names.into_iter().filter_map(|n| parse_snapshot_name(&n).map(|id| (id, n))).collect();
    snaps.sort_by_key(|(id, _)| (id.index, id.term));
    Ok(snaps)
}

/// Writes one snapshot, chunk by chunk. Dropping it without [`SnapshotWriter::finish`] leaves
/// a `.tmp` file that the next open removes; the previous snapshot stays in force.
///
/// A write that finds no space ([`StorageError::NoSpace`]) removes the temporary file at once
/// (a full disk must get its space back without a restart), and every later call on the
/// writer fails with the same kind of error: the snapshot is abandoned, the previous one stays
/// in force, and the caller starts a new writer later.
#[derive(Debug)]
pub struct SnapshotWriter {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    tmp_path: PathBuf,
    final_path: PathBuf,
    file: Arc<dyn DiskFile>,
    offset: u64,
    total_crc: u32,
    meta: SnapshotMeta,
    /// Set once a write found no space and the temporary file was removed.
    abandoned: bool,
}

impl SnapshotWriter {
    /// Starts a snapshot in `dir` covering the log up to `meta.last_included`.
    pub fn create(
        disk: Arc<dyn Disk>,
        dir: &Path,
        meta: SnapshotMeta,
    ) -> Result<SnapshotWriter, StorageError> {
        let name = snapshot_name(meta.last_included);
        let final_path = dir.join(&name);
        // Unique per writer: two transfers of the same snapshot (from two leaders) never
        // write into one file.
        let nonce = NEXT_TEMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp_path = dir.join(format!("{name}.{nonce}{TEMP_SUFFIX}"));
        let file = disk.open(&tmp_path, true).map_err(|e| StorageError::io(&tmp_path, e))?;
        let abandon = |e: StorageError| {
            if e.is_no_space() {
                remove_temp(&*disk, &tmp_path);
            }
            e
        };
        file.set_len(0).map_err(|e| abandon(StorageError::io(&tmp_path, e)))?;
        let mut head = MAGIC.to_vec();
        let mut body = Vec::new();
        body.extend_from_slice(&meta.last_included.term.0.to_le_bytes());
        body.extend_from_slice(&meta.last_included.index.0.to_le_bytes());
        record::encode_membership_raw(&mut body, &meta.membership);
        head.extend_from_slice(&(body.len() as u32).to_le_bytes());
        head.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        head.extend_from_slice(&body);
        file.write_at(&head, 0).map_err(|e| abandon(StorageError::io(&tmp_path, e)))?;
        Ok(SnapshotWriter {
            disk,
            dir: dir.to_path_buf(),
            tmp_path,
            final_path,
            file,
            offset: head.len() as u64,
            total_crc: 0,
            meta,
            abandoned: false,
        })
    }

    /// Wraps a failed write of the temporary file; one that found no space abandons the
    /// snapshot (see the type's documentation).
    fn write_failed(&mut self, e: std::io::Error) -> StorageError {
        let e = StorageError::io(&self.tmp_path, e);
        if e.is_no_space() && !self.abandoned {
            self.abandoned = true;
            remove_temp(&*self.disk, &self.tmp_path);
        }
        e
    }

    fn check_not_abandoned(&self) -> Result<(), StorageError> {
        if self.abandoned {
            return Err(StorageError::NoSpace {
                file: self.tmp_path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "the snapshot was abandoned after a write found no space",
                ),
            });
        }
        Ok(())
    }

    /// Appends data. Chunks larger than [`SNAPSHOT_CHUNK_BYTES_MAX`] are split; empty ones are
    /// ignored.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.check_not_abandoned()?;
        for chunk in data.chunks(SNAPSHOT_CHUNK_BYTES_MAX) {
            let mut frame = Vec::with_capacity(8 + chunk.len());
            frame.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(chunk).to_le_bytes());
            frame.extend_from_slice(chunk);
            if let Err(e) = self.file.write_at(&frame, self.offset) {
                return Err(self.write_failed(e));
            }
            self.offset += frame.len() as u64;
            self.total_crc = crc32c::crc32c_append(self.total_crc, chunk);
        }
        Ok(())
    }

    /// The CRC-32C of all data written so far, in order: what the file's end marker will
    /// hold. A receiver compares it with the sender's to check a transfer end to end.
    pub fn data_crc(&self) -> u32 {
        self.total_crc
    }

    /// Gives the snapshot up: its temporary file is removed now rather than at the next
    /// open (a transfer that will not be resumed must not leave its bytes on disk).
    pub fn abort(self) -> Result<(), StorageError> {
        if self.abandoned {
            return Ok(());
        }
        self.disk.remove(&self.tmp_path).map_err(|e| StorageError::io(&self.tmp_path, e))
    }

    /// Seals the snapshot: writes the end, fsyncs, renames into place, fsyncs the directory,
    /// then deletes older snapshots (never a newer one). When this returns `Ok`, the snapshot
    /// is durable and [`SnapshotReader::open_latest`] finds it unless a newer one exists.
    pub fn finish(mut self) -> Result<SnapshotMeta, StorageError> {
        self.check_not_abandoned()?;
        let mut end = 0u32.to_le_bytes().to_vec();
        end.extend_from_slice(&self.total_crc.to_le_bytes());
        if let Err(e) = self.file.write_at(&end, self.offset) {
            return Err(self.write_failed(e));
        }
        self.file
            .sync()
            .map_err(|e| StorageError::SyncFailed { file: self.tmp_path.clone(), source: e })?;
        self.disk
            .rename(&self.tmp_path, &self.final_path)
            .map_err(|e| StorageError::io(&self.final_path, e))?;
        let sync_dir = |disk: &dyn Disk, dir: &Path| {
            disk.sync_dir(dir)
                .map_err(|e| StorageError::SyncFailed { file: dir.to_path_buf(), source: e })
        };
        sync_dir(&*self.disk, &self.dir)?;
        let mut removed = false;
        // Only older snapshots go: a newer one (taken locally while this one was received)
        // stays in force.
        for (id, name) in list_snapshots(&*self.disk, &self.dir)? {
            if (id.index, id.term) < (self.meta.last_included.index, self.meta.last_included.term) {
                let path = self.dir.join(name);
                self.disk.remove(&path).map_err(|e| StorageError::io(&path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&*self.disk, &self.dir)?;
        }
        Ok(self.meta)
    }
}

/// Removes an abandoned snapshot's temporary file and makes that durable, logging the path.
/// Best effort: a leftover is removed at the next open.
fn remove_temp(disk: &dyn Disk, tmp_path: &Path) {
    tracing::warn!(file = %tmp_path.display(), "no space left for a snapshot file: removing it");
    if disk.remove(tmp_path).is_ok()
        && let Some(dir) = tmp_path.parent()
    {
        let _ = disk.sync_dir(dir);
    }
}

/// Reads a snapshot chunk by chunk, checking each chunk and, at the end, the whole.
#[derive(Debug)]
pub struct SnapshotReader {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    offset: u64,
    len: u64,
    total_crc: u32,
    meta: SnapshotMeta,
    done: bool,
}

impl SnapshotReader {
    /// Opens the newest snapshot in `dir`, if there is one, and checks its metadata.
    pub fn open_latest(
        disk: &dyn Disk,
        dir: &Path,
    ) -> Result<Option<SnapshotReader>, StorageError> {
        let Some((id, name)) = list_snapshots(disk, dir)?.pop() else {
            return Ok(None);
        };
        SnapshotReader::open_file(disk, dir.join(name), id).map(Some)
    }

    /// Opens the snapshot whose last included entry is `id`, and checks its metadata.
    pub fn open(disk: &dyn Disk, dir: &Path, id: EntryId) -> Result<SnapshotReader, StorageError> {
        SnapshotReader::open_file(disk, dir.join(snapshot_name(id)), id)
    }

    fn open_file(
        disk: &dyn Disk,
        path: PathBuf,
        id: EntryId,
    ) -> Result<SnapshotReader, StorageError> {
        let file = disk.open(&path, false).map_err(|e| StorageError::io(&path, e))?;
        let len = file.size_bytes().map_err(|e| StorageError::io(&path, e))?;
        let corrupt = |offset: u64, reason: String| StorageError::corrupt(&path, offset, reason);
        let mut head = [0u8; 16];
        if len < 16 {
            return Err(corrupt(0, format!("snapshot file of {len} bytes is too short")));
        }
        file.read_at(&mut head, 0).map_err(|e| StorageError::io(&path, e))?;
        if &head[..8] != MAGIC {
            return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
        }
        let meta_len = u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize;
        let meta_crc = u32::from_le_bytes(head[12..16].try_into().expect("4"));
        if meta_len > META_BYTES_MAX || 16 + meta_len as u64 > len {
            return Err(corrupt(8, format!("snapshot metadata length {meta_len} is invalid")));
        }
        let mut body = vec![0u8; meta_len];
        file.read_at(&mut body, 16).map_err(|e| StorageError::io(&path, e))?;
        if crc32c::crc32c(&body) != meta_crc {
            return Err(corrupt(16, "snapshot metadata checksum mismatch".into()));
        }
        let mut r = Reader::new(&body);
        let parse = |r: &mut Reader<'_>| -> Result<SnapshotMeta, String> {
            let term = Term(r.u64()?);
            let index = LogIndex(r.u64()?);
            let membership = r.membership()?;
            r.finish()?;
            Ok(SnapshotMeta { last_included: EntryId::new(term, index), membership })
        };
        let meta = parse(&mut r).map_err(|reason| corrupt(16, reason))?;
        if meta.last_included != id {
            return Err(corrupt(
                16,
                format!(
                    "snapshot metadata says {} but the file name says {id}",
                    meta.last_included
                ),
            ));
        }
        Ok(SnapshotReader {
            path: path.clone(),
            file,
            offset: 16 + meta_len as u64,
            len,
            total_crc: 0,
            meta,
            done: false,
        })
    }

    /// What the snapshot covers.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next chunk of data, checked; `None` at the end, once the whole has been checked.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let corrupt = |reason: String| StorageError::corrupt(&self.path, at, reason);
        if at + 8 > self.len {
            return Err(corrupt("snapshot ends before its end marker".into()));
        }
        let mut head = [0u8; 8];
        self.file.read_at(&mut head, at).map_err(|e| StorageError::io(&self.path, e))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4"));
        if len == 0 {
            if crc != self.total_crc {
                return Err(corrupt("snapshot checksum over all data mismatch".into()));
            }
            if at + 8 != self.len {
                return Err(corrupt(format!(
                    "{} unexpected bytes after the end of the snapshot",
                    self.len - at - 8
                )));
            }
            self.done = true;
            return Ok(None);
        }
        if len > SNAPSHOT_CHUNK_BYTES_MAX || at + 8 + len as u64 > self.len {
            return Err(corrupt(format!("snapshot chunk length {len} is invalid")));
        }
        let mut data = vec![0u8; len];
        self.file.read_at(&mut data, at + 8).map_err(|e| StorageError::io(&self.path, e))?;
        if crc32c::crc32c(&data) != crc {
            return Err(corrupt("snapshot chunk checksum mismatch".into()));
        }
        self.total_crc = crc32c::crc32c_append(self.total_crc, &data);
        self.offset = at + 8 + len as u64;
        Ok(Some(Bytes::from(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_disk::{CrashMode, SimDisk};
    use tenure_raft::{Membership, NodeId};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_included: EntryId::new(Term(2), LogIndex(index)),
            membership: Membership::voters([NodeId(1), NodeId(2)]),
        }
    }

    fn write(disk: &SimDisk, index: u64, chunks: &[&[u8]]) -> SnapshotMeta {
        let mut w =
            SnapshotWriter::create(Arc::new(disk.clone()), Path::new("/d"), meta(index)).unwrap();
        for c in chunks {
            w.write_chunk(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(disk: &SimDisk) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let Some(mut r) = SnapshotReader::open_latest(disk, Path::new("/d"))? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        while let Some(c) = r.next_chunk()? {
            data.extend_from_slice(&c);
        }
        Ok(Some((r.meta().clone(), data)))
    }

    fn disk() -> SimDisk {
        let disk = SimDisk::new(5);
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk
    }

    #[test]
    fn snapshot_round_trips_in_chunks_and_replaces_the_older_one() {
        let disk = disk();
        write(&disk, 10, &[b"old"]);
        let m = write(&disk, 20, &[b"hello ", b"", b"world"]);
        let (got, data) = read_all(&disk).unwrap().unwrap();
        assert_eq!(got, m);
        assert_eq!(data, b"hello world");
        assert_eq!(disk.paths().len(), 1, "the older snapshot is deleted");
    }

    #[test]
    fn finishing_an_older_snapshot_never_deletes_a_newer_one() {
        // A follower may receive a leader's snapshot while it writes a newer one of its own.
        let disk = disk();
        write(&disk, 30, &[b"newer"]);
        let older = write(&disk, 20, &[b"older"]);
        assert_eq!(disk.paths().len(), 2, "both stay until a newer one is finished");
        assert_eq!(read_all(&disk).unwrap().unwrap().1, b"newer", "the newest is in force");
        let mut r = SnapshotReader::open(&disk, Path::new("/d"), older.last_included).unwrap();
        assert_eq!(r.meta(), &older);
        assert_eq!(r.next_chunk().unwrap().unwrap(), &b"older"[..]);
        write(&disk, 40, &[b"newest"]);
        assert_eq!(disk.paths().len(), 1);
    }

    #[test]
    fn two_writers_of_the_same_snapshot_do_not_share_a_temp_file() {
        let disk = disk();
        let d = Arc::new(disk.clone());
        let mut a = SnapshotWriter::create(d.clone(), Path::new("/d"), meta(10)).unwrap();
        let mut b = SnapshotWriter::create(d, Path::new("/d"), meta(10)).unwrap();
        a.write_chunk(b"from a").unwrap();
        b.write_chunk(b"from b, longer").unwrap();
        a.finish().unwrap();
        assert_eq!(read_all(&disk).unwrap().unwrap().1, b"from a");
        b.finish().unwrap();
        assert_eq!(read_all(&disk).unwrap().unwrap().1, b"from b, longer");
    }

    #[test]
    fn unfinished_snapshot_is_invisible_and_crash_keeps_the_old_one() {
        let disk = disk();
        write(&disk, 10, &[b"old"]);
        let mut w =
            SnapshotWriter::create(Arc::new(disk.clone()), Path::new("/d"), meta(30)).unwrap();
        w.write_chunk(b"new").unwrap();
        assert_eq!(read_all(&disk).unwrap().unwrap().1, b"old");
        disk.crash(CrashMode::RandomPrefix);
        assert_eq!(read_all(&disk).unwrap().unwrap().1, b"old");
    }

    #[test]
    fn every_bit_flip_in_a_snapshot_is_detected_with_its_offset() {
        let disk = disk();
        write(&disk, 10, &[b"abcdefgh", b"ijkl"]);
        let path = disk.paths()[0].clone();
        let len = disk.read_raw(&path).unwrap().len() as u64;
        for offset in 0..len {
            disk.flip_bit(&path, offset, 3);
            match read_all(&disk) {
                Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, path),
                other => panic!("flip at {offset} not detected: {other:?}"),
            }
            disk.flip_bit(&path, offset, 3);
        }
        assert!(read_all(&disk).is_ok());
        // The chunk checksum names the chunk's offset.
        let chunk_offset = len - 8 - (8 + 4) - (8 + 8);
        disk.flip_bit(&path, chunk_offset + 9, 0);
        match read_all(&disk) {
            Err(StorageError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, chunk_offset);
                assert!(reason.contains("chunk checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn crash_at_every_step_of_writing_leaves_the_old_or_the_new_snapshot() {
        let ops_to_write_new = {
            let disk = disk();
            write(&disk, 10, &[b"old"]);
            let before = disk.op_count();
            write(&disk, 20, &[b"new", b"er"]);
            disk.op_count() - before
        };
        let mut saw_new = false;
        for k in 0..=ops_to_write_new {
            for mode in [CrashMode::LoseUnsynced, CrashMode::RandomPrefix] {
                let disk = disk();
                write(&disk, 10, &[b"old"]);
                disk.halt_after(disk.op_count() + k);
                let finished =
                    SnapshotWriter::create(Arc::new(disk.clone()), Path::new("/d"), meta(20))
                        .and_then(|mut w| {
                            w.write_chunk(b"new")?;
                            w.write_chunk(b"er")?;
                            w.finish()
                        })
                        .is_ok();
                disk.crash(mode);
                let (m, data) = read_all(&disk)
                    .unwrap_or_else(|e| panic!("crash after {k}: {e}"))
                    .expect("a snapshot");
                match m.last_included.index.0 {
                    10 => {
                        assert!(!finished, "a finished snapshot must survive");
                        assert_eq!(data, b"old");
                    }
                    20 => {
                        assert_eq!(data, b"newer");
                        saw_new = true;
                    }
                    other => panic!("unexpected snapshot {other}"),
                }
            }
        }
        assert!(saw_new);
    }

    #[test]
    fn truncated_snapshot_is_corrupt() {
        let disk = disk();
        write(&disk, 10, &[b"abcdefgh"]);
        let path = disk.paths()[0].clone();
        let len = disk.read_raw(&path).unwrap().len() as u64;
        disk.truncate_raw(&path, len - 3);
        assert!(matches!(read_all(&disk), Err(StorageError::Corrupt { .. })));
    }
}
