//! Damage on disk: each case of recovery either cuts a torn tail (and says so) or stops with an
//! error that names the file and the offset of the damaged record. Never a silent skip, never
//! a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tenure_raft::{Entry, EntryId, EntryKind, LogError, LogIndex, LogView, Term};
use tenure_storage::record::{self, Record};
use tenure_storage::{CrashMode, Options, SimDisk, Storage, StorageError};

const DIR: &str = "/data";

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        entry_bytes_max: 1024,
        membership_bytes_max: 256,
        write_buffer_bytes_max: 4096,
        cache_bytes_max: 200,
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry::new(
        Term(term),
        LogIndex(index),
        Bytes::from(format!("value-{index:04}-{}", "z".repeat(40))),
    )
}

fn open(disk: &SimDisk) -> Result<Storage, StorageError> {
    Storage::open(Arc::new(disk.clone()), DIR, options())
}

fn segment(seq: u64) -> PathBuf {
    Path::new(DIR).join(format!("{seq:016x}.wal"))
}

/// A log of entries 1..=100 in term 2, synced, spread over several segments.
fn synced_log() -> SimDisk {
    let disk = SimDisk::new(11);
    let mut s = open(&disk).unwrap();
    let es: Vec<Entry> = (1..=100).map(|i| entry(2, i)).collect();
    s.append(&es).unwrap();
    s.sync().unwrap();
    assert!(s.segment_count() >= 3);
    disk
}

fn segments(disk: &SimDisk) -> Vec<PathBuf> {
    disk.paths().into_iter().filter(|p| p.extension().is_some_and(|e| e == "wal")).collect()
}

/// (offset, frame bytes, entry id if an entry) of every valid record of a file.
fn records(disk: &SimDisk, path: &Path) -> Vec<(u64, usize, Option<EntryId>)> {
    let data = disk.read_raw(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(f) = record::decode_frame(&data[pos..]) {
        let id = match record::decode_record(f.body).unwrap() {
            Record::Entry { id, .. } => Some(id),
            _ => None,
        };
        out.push((pos as u64, f.frame_bytes, id));
        pos += f.frame_bytes;
    }
    out
}

fn expect_corrupt(disk: &SimDisk, file: &Path, offset: u64, reason_part: &str) {
    match open(disk) {
        Err(StorageError::Corrupt { file: f, offset: o, reason }) => {
            assert_eq!((f.as_path(), o), (file, offset), "reason: {reason}");
            assert!(reason.contains(reason_part), "reason {reason:?} lacks {reason_part:?}");
        }
        other => panic!("expected corruption at {}:{offset}, got {other:?}", file.display()),
    }
}

#[test]
fn bit_flip_in_a_sealed_segment_names_the_file_and_offset() {
    let disk = synced_log();
    let seg = segment(1);
    let (offset, _, id) = records(&disk, &seg)[5];
    assert!(id.is_some());
    disk.flip_bit(&seg, offset + 20, 2);
    expect_corrupt(&disk, &seg, offset, "checksum mismatch");
    let err = open(&disk).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "corrupt data in {} at offset {offset}: record checksum mismatch (69-byte body)",
            seg.display()
        )
    );
}

#[test]
fn bit_flip_before_the_tail_of_the_last_segment_is_corruption() {
    let disk = synced_log();
    let last = segments(&disk).pop().unwrap();
    let recs = records(&disk, &last);
    let (offset, _, _) = recs[recs.len() - 3];
    disk.flip_bit(&last, offset + 13, 0);
    expect_corrupt(&disk, &last, offset, "checksum mismatch");
}

#[test]
fn bit_flip_in_the_last_complete_record_is_corruption_not_a_torn_tail() {
    for (at, reason) in [
        (15, "record checksum mismatch"),
        (1, "header checksum mismatch"),
        (5, "header checksum mismatch"),
    ] {
        let disk = synced_log();
        let last = segments(&disk).pop().unwrap();
        let (offset, frame_bytes, _) = *records(&disk, &last).last().unwrap();
        disk.flip_bit(&last, offset + at, 7);
        expect_corrupt(&disk, &last, offset, reason);
        disk.flip_bit(&last, offset + at, 7);
        // The end marker too: a flipped marker is not a torn write.
        disk.flip_bit(&last, offset + frame_bytes as u64 - 1, 0);
        expect_corrupt(&disk, &last, offset, "end marker");
    }
}

#[test]
fn torn_tail_is_cut_off_and_the_log_goes_on() {
    let disk = synced_log();
    let mut s = open(&disk).unwrap();
    let more: Vec<Entry> = (101..=110).map(|i| entry(2, i)).collect();
    s.append(&more).unwrap();
    s.begin_sync().map(drop).unwrap_or(()); // writes the batch; the fsync never happens
    drop(s);
    for keep_bytes in [3, 11, 12, 40, 82, 200] {
        let disk = disk.fork();
        disk.crash(CrashMode::TearLastWrite { keep_bytes });
        let mut s = open(&disk).unwrap_or_else(|e| panic!("keep {keep_bytes}: {e}"));
        let whole = keep_bytes / 82;
        assert_eq!(s.last_index(), LogIndex(100 + whole as u64), "keep {keep_bytes}");
        // Appending after the cut and reopening finds exactly the new entries.
        let next = s.last_index().next();
        s.append(&[Entry::new(Term(3), next, Bytes::from_static(b"x"))]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = open(&disk).unwrap();
        assert_eq!(s.last_index(), next);
        assert_eq!(s.term(next), Ok(Term(3)));
    }
}

fn append_raw_entry(disk: &SimDisk, id: EntryId) -> (PathBuf, u64) {
    let last = segments(disk).pop().unwrap();
    let (offset, frame_bytes, _) = *records(disk, &last).last().unwrap();
    let end = offset + frame_bytes as u64;
    let mut frame = Vec::new();
    record::encode_entry(&mut frame, id, EntryKind::Normal, b"forged");
    disk.write_raw(&last, end, &frame);
    (last, end)
}

#[test]
fn gap_in_entry_indexes_is_corruption() {
    let disk = synced_log();
    let (file, offset) = append_raw_entry(&disk, EntryId::new(Term(2), LogIndex(102)));
    expect_corrupt(&disk, &file, offset, "does not follow the last index 100 (gap)");
}

#[test]
fn term_going_backwards_is_corruption() {
    let disk = synced_log();
    let (file, offset) = append_raw_entry(&disk, EntryId::new(Term(1), LogIndex(101)));
    expect_corrupt(&disk, &file, offset, "goes back from term 2");
}

#[test]
fn missing_middle_segment_is_corruption() {
    let disk = synced_log();
    disk.remove_raw(&segment(2));
    expect_corrupt(&disk, &segment(3), 0, "segment sequence gap");
}

#[test]
fn missing_first_segment_without_compaction_is_corruption() {
    let disk = synced_log();
    disk.remove_raw(&segment(1));
    expect_corrupt(&disk, &segment(2), 0, "are missing");
}

#[test]
fn truncated_or_zeroed_sealed_segment_is_corruption() {
    let disk = synced_log();
    let seg = segment(1);
    let (offset, _, _) = records(&disk, &seg)[10];
    disk.truncate_raw(&seg, offset + 30);
    expect_corrupt(&disk, &seg, offset, "runs past the end");

    let disk = synced_log();
    disk.truncate_raw(&seg, 0);
    expect_corrupt(&disk, &seg, 0, "sealed segment is empty");

    let disk = synced_log();
    let (offset, _, _) = records(&disk, &seg)[10];
    disk.write_raw(&seg, offset, &[0u8; 12]);
    expect_corrupt(&disk, &seg, offset, "zeroed record header followed by data");
}

#[test]
fn read_failure_on_open_is_an_io_error_naming_the_file() {
    let disk = synced_log();
    disk.fail_next_reads(1);
    match open(&disk) {
        Err(StorageError::Io { file, .. }) => assert_eq!(file, segment(1)),
        other => panic!("{other:?}"),
    }
    assert!(open(&disk).is_ok(), "only one read failed");
}

#[test]
fn damage_found_by_a_later_read_is_a_storage_error_naming_file_and_offset() {
    let disk = synced_log();
    let s = open(&disk).unwrap();
    let seg = segment(1);
    let (offset, _, id) = records(&disk, &seg)[3];
    assert_eq!(id.unwrap().index, LogIndex(3));
    disk.flip_bit(&seg, offset + 30, 1);
    let mut out = Vec::new();
    match s.entries(LogIndex(1), LogIndex(5), u64::MAX, &mut out) {
        Err(LogError::Storage(msg)) => {
            assert!(msg.contains(&seg.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    disk.fail_next_reads(1);
    assert!(matches!(
        s.entries(LogIndex(50), LogIndex(51), u64::MAX, &mut out),
        Err(LogError::Storage(_))
    ));
}

#[test]
fn unsynced_data_after_a_gap_of_zeros_at_the_tail_is_discarded_and_zeroed() {
    // Writes that reached the disk out of order before a crash: a record after a zero gap.
    let disk = synced_log();
    let last = segments(&disk).pop().unwrap();
    let (offset, frame_bytes, _) = *records(&disk, &last).last().unwrap();
    let mut frame = Vec::new();
    record::encode_entry(
        &mut frame,
        EntryId::new(Term(2), LogIndex(103)),
        EntryKind::Normal,
        b"late",
    );
    let stray = offset + frame_bytes as u64 + 2 * 82;
    disk.write_raw(&last, stray, &frame);
    let mut s = open(&disk).unwrap();
    assert_eq!(s.last_index(), LogIndex(100));
    // The stray bytes are gone: new records written over the gap never meet them.
    s.append(&[entry(2, 101), entry(2, 102), entry(2, 103)]).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = open(&disk).unwrap();
    assert_eq!(
        s.read_entries(LogIndex(101), LogIndex(103)).unwrap(),
        vec![entry(2, 101), entry(2, 102), entry(2, 103)]
    );
    let data = disk.read_raw(&last).unwrap();
    let end = records(&disk, &last).last().map(|(o, n, _)| o + *n as u64).unwrap() as usize;
    assert!(data[end..].iter().all(|&b| b == 0), "nothing stale after the valid end");
}
