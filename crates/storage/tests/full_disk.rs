//! A full disk (issue 18): every operation that needs new space fails with
//! [`StorageError::NoSpace`], the storage stays usable, and the same operations succeed once
//! space is freed, with nothing lost, duplicated or torn on disk.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tenure_raft::{Entry, EntryId, HardState, LogIndex, LogView, Membership, NodeId, Term};
use tenure_storage::{
    CrashMode, Disk, DiskFile, Options, SimDisk, SnapshotMeta, Storage, StorageError, disk::DirLock,
};

const DIR: &str = "/node1";

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        entry_bytes_max: 1024,
        membership_bytes_max: 256,
        write_buffer_bytes_max: 700,
        cache_bytes_max: 900,
    }
}

fn entry(term: u64, index: u64) -> Entry {
    let pad = "p".repeat((index * 7 % 90) as usize);
    Entry::new(Term(term), LogIndex(index), Bytes::from(format!("{term}/{index}{pad}")))
}

fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(1, i)).collect()
}

fn open(disk: Arc<dyn Disk>) -> Storage {
    Storage::open(disk, DIR, options()).expect("open")
}

/// Reads the whole log back and checks it is exactly entries 1..=last of term 1.
fn assert_log_is(s: &Storage, last: u64) {
    assert_eq!(s.last_index(), LogIndex(last));
    let got = s.read_entries(LogIndex(1), LogIndex(last)).expect("read");
    assert_eq!(got, entries(1, last));
}

#[test]
fn no_space_is_told_apart_from_other_io_errors() {
    assert!(tenure_storage::is_no_space(&io::Error::from_raw_os_error(28)), "ENOSPC");
    assert!(tenure_storage::is_no_space(&io::Error::from_raw_os_error(122)), "EDQUOT");
    assert!(tenure_storage::is_no_space(&io::Error::from(io::ErrorKind::StorageFull)));
    assert!(!tenure_storage::is_no_space(&io::Error::from_raw_os_error(5)), "EIO is not");
    assert!(!tenure_storage::is_no_space(&io::Error::other("anything else")));
}

#[test]
fn a_rollover_that_finds_no_space_is_refused_and_the_retried_append_completes() {
    let disk = SimDisk::new(1);
    let mut s = open(Arc::new(disk.clone()));
    s.set_hard_state(HardState { term: Term(1), vote: Some(NodeId(1)), commit: LogIndex(0) })
        .unwrap();
    // Full from the start: the first sync's segment preparation fails (not fatal), so the
    // rollover has to create the next segment inline, and cannot.
    disk.set_full(true);
    s.append(&entries(1, 5)).unwrap();
    s.sync().expect("a preparation without space does not fail the sync");
    assert!(!s.has_prepared_segment());
    assert!(
        !disk.paths().iter().any(|p| p.ends_with(tenure_storage::log::PREPARED_SEGMENT_NAME)),
        "the failed preparation's file is removed"
    );
    let mut last = 5;
    let failed = loop {
        match s.append(&entries(last + 1, last + 3)) {
            Ok(()) => last += 3,
            Err(e) => break e,
        }
        assert!(last < 200, "a 4 KiB segment must fill up");
    };
    assert!(failed.is_no_space(), "{failed}");
    assert_eq!(s.segment_count(), 1, "no segment was added");
    // Not poisoned: other requests still work, and the same batch fails the same way.
    assert!(s.append(&entries(last + 1, last + 3)).unwrap_err().is_no_space());
    assert!(s.no_space_count() >= 3);
    s.sync().expect("what was written before the full segment is synced");
    disk.set_full(false);
    s.append(&entries(last + 1, last + 3)).expect("the retry completes once space is freed");
    last += 3;
    s.sync().unwrap();
    assert_eq!(s.segment_count(), 2);
    assert_log_is(&s, last);
    drop(s);
    disk.crash(CrashMode::LoseUnsynced);
    let s = open(Arc::new(disk.clone()));
    assert_log_is(&s, last);
    assert_eq!(s.hard_state().vote, Some(NodeId(1)));
}

#[test]
fn a_segment_preparation_that_finds_no_space_waits_before_trying_again() {
    let disk = SimDisk::new(2);
    let mut s = open(Arc::new(disk.clone()));
    disk.set_full(true);
    s.append(&entries(1, 1)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.no_space_count(), 1);
    disk.set_full(false);
    let skipped = tenure_storage::log::PREPARE_SKIP_SYNCS_AFTER_NO_SPACE as u64;
    for i in 0..skipped {
        s.append(&entries(i + 2, i + 2)).unwrap();
        s.sync().unwrap();
        assert!(!s.has_prepared_segment(), "sync {i}: too early for another try");
    }
    s.append(&entries(skipped + 2, skipped + 2)).unwrap();
    s.sync().unwrap();
    assert!(s.has_prepared_segment(), "tried again, and there is space now");
}

/// A disk that cannot preallocate (`allocate` does nothing), as a filesystem without
/// `fallocate` support: every write of the log then needs new space.
#[derive(Debug)]
struct NoPrealloc(SimDisk);

#[derive(Debug)]
struct NoPreallocFile(Arc<dyn DiskFile>);

impl DiskFile for NoPreallocFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn size_bytes(&self) -> io::Result<u64> {
        self.0.size_bytes()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        // The recovery's "restore the preallocation" must not allocate either.
        if len > self.0.size_bytes()? { Ok(()) } else { self.0.set_len(len) }
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync()
    }
    fn allocate(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

impl Disk for NoPrealloc {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(NoPreallocFile(self.0.open(path, create)?)))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn lock(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.0.lock(dir)
    }
}

#[test]
fn a_short_write_is_written_again_from_the_last_good_offset() {
    for free in [0u64, 1, 7, 10, 33, 150] {
        let disk = SimDisk::new(free);
        let mut s = open(Arc::new(NoPrealloc(disk.clone())));
        s.append(&entries(1, 3)).unwrap();
        s.sync().unwrap();
        // Some bytes fit, then the disk is full: a short write, then ENOSPC.
        disk.set_free_bytes(Some(free));
        s.append(&entries(4, 6)).unwrap();
        let e = s.sync().expect_err("the buffer does not fit");
        assert!(e.is_no_space(), "free {free}: {e}");
        assert_eq!(disk.no_space_count(), 1, "free {free}");
        // More records join the buffer meanwhile; the retry writes it all from the last good
        // offset, over the prefix the short write left.
        s.append(&entries(7, 8)).unwrap();
        assert!(s.sync().unwrap_err().is_no_space(), "free {free}: still full");
        disk.set_free_bytes(None);
        s.sync().expect("space freed");
        assert_log_is(&s, 8);
        drop(s);
        disk.crash(CrashMode::LoseUnsynced);
        let s = open(Arc::new(NoPrealloc(disk.clone())));
        assert_log_is(&s, 8);
    }
}

#[test]
fn a_crash_after_a_short_write_recovers_the_synced_log() {
    for seed in 0..40 {
        let disk = SimDisk::new(seed);
        let mut s = open(Arc::new(NoPrealloc(disk.clone())));
        s.append(&entries(1, 3)).unwrap();
        s.sync().unwrap();
        disk.set_free_bytes(Some(seed * 5));
        s.append(&entries(4, 6)).unwrap();
        assert!(s.sync().unwrap_err().is_no_space());
        drop(s);
        // Whatever part of the short write survives is whole records and a torn tail.
        disk.crash(CrashMode::RandomPrefix);
        disk.set_free_bytes(None);
        let s = Storage::open(Arc::new(NoPrealloc(disk.clone())), DIR, options())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // The synced entries, and of the rest only whole records that reached the disk.
        let last = s.last_index().0;
        assert!((3..=6).contains(&last), "seed {seed}: last {last}");
        assert_log_is(&s, last);
    }
}

#[test]
fn a_snapshot_that_finds_no_space_is_abandoned_and_its_file_removed() {
    let disk = SimDisk::new(3);
    let mut s = open(Arc::new(disk.clone()));
    s.append(&entries(1, 4)).unwrap();
    s.sync().unwrap();
    let meta = |index| SnapshotMeta {
        last_included: EntryId::new(Term(1), LogIndex(index)),
        membership: Membership::default(),
    };
    let mut w = s.snapshot_writer(meta(2)).unwrap();
    w.write_chunk(b"state at 2").unwrap();
    w.finish().unwrap();
    let mut w = s.snapshot_writer(meta(4)).unwrap();
    w.write_chunk(b"some of the state").unwrap();
    disk.set_full(true);
    let e = w.write_chunk(&[7u8; 5000]).unwrap_err();
    assert!(e.is_no_space(), "{e}");
    let temps = |d: &SimDisk| d.paths().iter().filter(|p| p.ends_with_tmp()).count();
    assert_eq!(temps(&disk), 0, "the temporary file is removed at once");
    assert!(w.write_chunk(b"more").unwrap_err().is_no_space(), "the writer stays abandoned");
    assert!(w.finish().unwrap_err().is_no_space());
    assert_eq!(
        s.latest_snapshot().unwrap().expect("one").meta().last_included.index,
        LogIndex(2),
        "the previous snapshot stays in force"
    );
    // Creating a writer on a full disk fails the same way and leaves nothing either.
    assert!(s.snapshot_writer(meta(4)).unwrap_err().is_no_space());
    assert_eq!(temps(&disk), 0);
    disk.set_full(false);
    let mut w = s.snapshot_writer(meta(4)).unwrap();
    w.write_chunk(&[7u8; 5000]).unwrap();
    w.finish().expect("a later snapshot succeeds once space is freed");
    assert_eq!(s.latest_snapshot().unwrap().unwrap().meta().last_included.index, LogIndex(4));
}

trait EndsWithTmp {
    fn ends_with_tmp(&self) -> bool;
}

impl EndsWithTmp for std::path::PathBuf {
    fn ends_with_tmp(&self) -> bool {
        self.to_string_lossy().ends_with(".tmp")
    }
}

#[test]
fn other_write_errors_still_poison_the_storage() {
    let disk = SimDisk::new(4);
    let mut s = open(Arc::new(disk.clone()));
    s.append(&entries(1, 1)).unwrap();
    disk.halt_after(disk.op_count());
    let e = s.sync().unwrap_err();
    assert!(!e.is_no_space(), "{e}");
    assert!(matches!(s.append(&entries(2, 2)), Err(StorageError::Poisoned { .. })));
}
