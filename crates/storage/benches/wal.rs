//! Write-ahead log throughput against the disk's own limits, on the real filesystem.
//!
//! Run with `cargo bench -p tenure-storage` (about a minute). It works in a temporary directory
//! under `$TENURE_BENCH_DIR`, else `$CARGO_TARGET_DIR`, else `/work` (not `/tmp`, which may be a
//! tmpfs where fsync costs nothing), and reports:
//!
//! - the raw `fdatasync` rate of 4 KiB appends (plain file, write + `sync_data` in a loop);
//! - the log's one-entry batches (append + sync each), in appends/s and as a share of the raw
//!   rate (goal: at least 90%);
//! - 256-entry batches of 256-byte entries, in entries/s and MB/s, against raw sequential
//!   write-and-sync bandwidth with the same payload bytes per sync (goal: at least 80%), and
//!   the same with 4096-entry (1 MiB) batches;
//! - the time to open a log of 1,000,000 entries (goal: under 2 s; page cache warm).
//!
//! Raw and log runs alternate in short rounds so that noise from other work on the machine
//! falls on both alike. Timings are printed, never asserted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_raft::{Entry, LogIndex, LogView, Term};
use tenure_storage::{Options, RealDisk, Storage};

const ROUND: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 3;

fn bench_root() -> PathBuf {
    std::env::var_os("TENURE_BENCH_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work"))
}

/// Runs `step` until `ROUND` has passed; returns (steps, elapsed).
fn timed(mut step: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < ROUND {
        step();
        n += 1;
    }
    (n, start.elapsed())
}

/// Plain file, appended `chunk` bytes at a time, `sync_data` after each write.
struct RawFile {
    file: fs::File,
    offset: u64,
    chunk: Vec<u8>,
}

impl RawFile {
    fn new(dir: &Path, name: &str, chunk_bytes: usize) -> RawFile {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join(name))
            .unwrap();
        RawFile { file, offset: 0, chunk: vec![0x5a; chunk_bytes] }
    }

    fn step(&mut self) {
        self.file.write_all_at(&self.chunk, self.offset).unwrap();
        self.file.sync_data().unwrap();
        self.offset += self.chunk.len() as u64;
    }
}

struct Log {
    storage: Storage,
    next: u64,
    payload: Bytes,
    batch: Vec<Entry>,
}

impl Log {
    fn new(dir: &Path, payload_bytes: usize, batch_entries: usize) -> Log {
        let storage = Storage::open(Arc::new(RealDisk), dir, Options::default()).unwrap();
        let next = storage.last_index().0 + 1;
        Log {
            storage,
            next,
            payload: Bytes::from(vec![0x42; payload_bytes]),
            batch: Vec::with_capacity(batch_entries),
        }
    }

    fn step(&mut self, batch_entries: usize) {
        self.batch.clear();
        for _ in 0..batch_entries {
            self.batch.push(Entry::new(Term(1), LogIndex(self.next), self.payload.clone()));
            self.next += 1;
        }
        self.storage.append(&self.batch).unwrap();
        self.storage.sync().unwrap();
    }
}

/// Alternates raw and log rounds; returns (raw steps/s, log steps/s).
fn compare(raw: &mut RawFile, log: &mut Log, batch_entries: usize) -> (f64, f64) {
    let (mut raw_n, mut raw_t, mut log_n, mut log_t) = (0, Duration::ZERO, 0, Duration::ZERO);
    for _ in 0..ROUNDS {
        let (n, t) = timed(|| raw.step());
        raw_n += n;
        raw_t += t;
        let (n, t) = timed(|| log.step(batch_entries));
        log_n += n;
        log_t += t;
    }
    (raw_n as f64 / raw_t.as_secs_f64(), log_n as f64 / log_t.as_secs_f64())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a minute of fsyncs has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("wal benchmark: skipped (run it with `cargo bench -p tenure-storage`)");
        return;
    }
    let root = bench_root();
    fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::Builder::new().prefix("tenure-storage-bench").tempdir_in(&root).unwrap();
    let dir = tmp.path();
    println!("tenure-storage WAL benchmark in {}", dir.display());
    let mut out = std::io::stdout();

    // 1. fsync-bound: one small write per sync.
    let mut raw = RawFile::new(dir, "raw-4k", 4096);
    let mut log = Log::new(&dir.join("log-1"), 256, 1);
    let (raw_rate, log_rate) = compare(&mut raw, &mut log, 1);
    println!("raw fdatasync, 4 KiB appends          {raw_rate:>10.0} syncs/s");
    println!(
        "log, 1 entry (256 B) per sync         {log_rate:>10.0} appends/s  ({:.0}% of raw, goal >= 90%)",
        100.0 * log_rate / raw_rate
    );
    drop(log);
    let mut raw = RawFile::new(dir, "raw-4k-again", 4096);
    let mut log = Log::new(&dir.join("log-4k"), 4096, 1);
    let (raw_rate, log_rate) = compare(&mut raw, &mut log, 1);
    println!("raw fdatasync, 4 KiB appends          {raw_rate:>10.0} syncs/s");
    println!(
        "log, 1 entry (4 KiB) per sync         {log_rate:>10.0} appends/s  ({:.0}% of raw, same bytes per sync)",
        100.0 * log_rate / raw_rate
    );
    out.flush().unwrap();
    drop(log);

    // 2. Bandwidth: 256-byte entries in batches, against raw writes of the same payload per
    // sync. 256 entries (64 KiB) is the batch the goal names; 4096 entries (1 MiB) shows the
    // log reaching the disk's bandwidth once batches are large enough to hide the fsync.
    let mb = |bytes: f64| bytes / 1e6;
    for batch in [256usize, 4096] {
        let payload_per_sync = batch * 256;
        let written_per_sync = batch * (256 + tenure_storage::record::entry_frame_bytes(0));
        let mut raw = RawFile::new(dir, &format!("raw-{batch}"), payload_per_sync);
        let mut log = Log::new(&dir.join(format!("log-{batch}")), 256, batch);
        let (raw_rate, log_rate) = compare(&mut raw, &mut log, batch);
        let raw_mbps = mb(raw_rate * payload_per_sync as f64);
        let log_payload_mbps = mb(log_rate * payload_per_sync as f64);
        let log_written_mbps = mb(log_rate * written_per_sync as f64);
        println!(
            "raw write+fdatasync, {:>4} KiB per sync {raw_rate:>10.0} syncs/s   {raw_mbps:>7.1} MB/s",
            payload_per_sync >> 10
        );
        println!(
            "log, {batch} x 256 B entries per sync {:>11.0} entries/s {log_payload_mbps:>7.1} MB/s payload ({:.0}% of raw{}), {log_written_mbps:.1} MB/s written ({:.0}%)",
            log_rate * batch as f64,
            100.0 * log_payload_mbps / raw_mbps,
            if batch == 256 { ", goal >= 80%" } else { "" },
            100.0 * log_written_mbps / raw_mbps,
        );
        out.flush().unwrap();
    }

    // 3. Recovery: open a log of 1,000,000 entries.
    let count = 1_000_000u64;
    let open_dir = dir.join("log-open");
    {
        let mut log = Log::new(&open_dir, 100, 4096);
        let start = Instant::now();
        while log.next <= count {
            let n = (count + 1 - log.next).min(4096) as usize;
            log.step(n);
        }
        println!("wrote {count} entries of 100 B in {:.2} s", start.elapsed().as_secs_f64());
    }
    let start = Instant::now();
    let storage = Storage::open(Arc::new(RealDisk), &open_dir, Options::default()).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(storage.last_index(), LogIndex(count));
    println!(
        "open of {count} entries ({} segments)  {:>8.3} s (goal < 2 s, page cache warm)",
        storage.segment_count(),
        elapsed.as_secs_f64()
    );
}
